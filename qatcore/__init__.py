"""qatcore: how low-precision neural networks are trained, counted and shipped.

The library behind the qatcore course. Modules, one idea each: ``quantizers`` (forward
quantizers), ``estimators`` (gradient estimators from one sympy definition), ``layers`` and
``models`` (quantized layers and the papers' models), ``data`` (digits and MNIST-format files),
``train`` (deterministic training with trajectories), ``imagenet`` (the same experiment on a
quantized ResNet over an ImageNet folder, under DDP), ``runtime`` (seeds and threads),
``report`` (checks and headline numbers), ``plots`` (figures), ``reproduce`` and ``cli``.
"""

from qatcore.runtime import configure

__version__ = "0.1.0"
__all__ = ["configure", "__version__"]
