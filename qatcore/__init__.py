"""qatcore: how low-precision neural networks are trained, counted and shipped.

The library behind the qatcore course, in five layers; an import goes to its own layer or one
below, never up (tests/test_layout.py checks it, the zoo's ``"module:factory"`` strings included):

1. **core**: ``quantizers`` (forward quantizers), ``quantized`` (the ``QuantizedLayer`` protocol:
   a layer's ``weight_bits``/``input_bits``), ``checks`` (argument checks), ``optimizers`` (the
   named optimizer configs and schedule every experiment holds), ``runtime`` (seeds, threads,
   progress bars), ``distributed`` (DDP), ``files`` (atomic writes), ``palette``, ``live`` (the
   live view every dashboard shares), ``stats``, ``metrics``, ``architectures`` (float
   ResNet/MobileNet geometries), ``data`` (digits, MNIST-format IDX, ImageNet-layout folders).
2. **papers**, each on the core: ``estimators``, paper 1 (custom estimators are STEs in disguise);
   ``cost``, paper 2 (ACE, ACEv2 and PikeLPN, whose layers train with paper 1's estimators);
   ``bnn``, paper 3 (BNN training in low memory). Each has its ``plots`` and ``widgets``.
3. **export**: ONNX (QDQ), QONNX, packed binary with a NumPy reference, torch.export.
4. **models**: ``zoo`` (every model by its one name), ``checkpoint``, ``training`` (train a zoo
   model into a checkpoint, export a checkpoint).
5. **course**: ``course`` (report, reproduce, student, site, summaries) and ``cli``, the command
   line: thin faces on the same functions.
"""

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    """The installed version, written once, in pyproject.toml; for a checkout that is on ``PYTHONPATH``
    without being installed (a machine that has its own PyTorch), the one its pyproject.toml states."""
    try:
        return version("qatcore")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"]


__version__ = _version()
__all__ = ["configure", "__version__"]


def __getattr__(name: str):
    """``qatcore.configure`` imports torch on first use, so ``import qatcore`` (and ``--help``) is quick."""
    if name == "configure":
        from qatcore.runtime import configure

        return configure
    raise AttributeError(f"module 'qatcore' has no attribute {name!r}")
