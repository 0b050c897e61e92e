"""Deployable exports of trained models, each reloaded and checked against PyTorch.

Four formats: ``onnx`` (standard QDQ: integer weight codes, INT4 where they fit, feeding
DequantizeLinear, their true range in ``metadata_props``; QuantizeLinear/DequantizeLinear pairs
for activation quantizers; Sign for binary activations; with ``int8=True`` the 8-bit variant that
onnxruntime runs as QLinearConv/QGemm, ``onnx_int8``), ``qonnx`` (QONNX ``Quant`` and
``BipolarQuant`` nodes, for FINN and hls4ml; needs the ``course`` extra), ``packed`` (weights at
their own bit width, binary ones 8 per byte, with a NumPy reference inference that computes binary
layers by XNOR and popcount) and ``pt2`` (``torch.export``). ``export`` writes the file and a
metadata JSON atomically, and only when the reloaded file matches PyTorch (``ParityError``
otherwise). Submodules load on first use, so naming ``FORMATS`` does not import onnx.
"""

from __future__ import annotations

import importlib

FORMATS = ("onnx", "qonnx", "packed", "pt2")
#: the module each format needs beyond the library, and where it comes from
NEEDS = {"qonnx": ("qonnx", "the course extra: pip install 'qatcore[course]'")}


class MissingDependencyError(ImportError):
    """A format's package is not installed (``qatcore export`` exits 2 with this one line)."""


def check_installed(format: str) -> None:
    """``MissingDependencyError`` when ``format`` needs a package that is not installed;
    checked before anything is loaded or written."""
    import importlib.util

    if format in NEEDS and importlib.util.find_spec(NEEDS[format][0]) is None:
        module, where = NEEDS[format]
        raise MissingDependencyError(
            f"format {format!r} needs {module}, which is not installed ({where})"
        )


_WHERE = {
    "ExportResult": "exporter",
    "ParityError": "exporter",
    "export": "exporter",
    "UnsupportedLayerError": "graph",
    "lower": "graph",
    "Parity": "metadata",
    "parity": "metadata",
}

__all__ = ["FORMATS", "MissingDependencyError", "check_installed", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"qatcore.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'qatcore.export' has no attribute {name!r}")
