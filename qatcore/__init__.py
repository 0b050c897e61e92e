"""qatcore: how low-precision neural networks are trained, counted and shipped.

The library behind the qatcore course: a shared core, one package per paper, export and the
course machinery on top. Imports run one way (tests/test_layout.py checks it).

- shared core: ``quantizers`` (forward quantizers), ``checks`` (argument checks), ``optimizers``
  (the optimizer and schedule every experiment holds), ``runtime`` (seeds, threads, progress bars),
  ``metrics`` (accuracy), ``distributed`` (DDP), ``files``
  (atomic writes), ``checkpoint``, ``zoo`` (every model by name), ``architectures`` (float
  ResNet/MobileNet geometries), ``data`` (digits, MNIST-format IDX, ImageNet-layout folders).
- ``estimators``, paper 1 (custom estimators are STEs in disguise): ``core`` (each estimator one
  sympy definition, its names re-exported by the package), ``layers``, ``models``, ``train``,
  ``theory``, ``quadratic``, ``trajectory``, ``equivalence``, ``imagenet``, ``plots``, ``widgets``.
- ``cost``, paper 2 (ACE, ACEv2 and PikeLPN): ``ace``, ``cost_models``, ``pikelpn_layers``,
  ``pikelpn``, ``plots``, ``widgets``.
- ``bnn``, paper 3 (BNN training in low memory): layers, packing, functions, models, optim,
  train, memory, measure, ``plots``, ``widgets``.
- ``export``: ONNX (QDQ), packed binary with a NumPy reference, torch.export; ``plots``, ``widgets``.
- ``course``: ``report`` (checks and headline numbers), ``reproduce`` (every notebook headless),
  ``live`` (the live view every dashboard shares); ``cli`` is the command line on top of it all.
"""

from importlib.metadata import version

__version__ = version("qatcore")  # written once, in pyproject.toml
__all__ = ["configure", "__version__"]


def __getattr__(name: str):
    """``qatcore.configure`` imports torch on first use, so ``import qatcore`` (and ``--help``) is quick."""
    if name == "configure":
        from qatcore.runtime import configure

        return configure
    raise AttributeError(f"module 'qatcore' has no attribute {name!r}")
