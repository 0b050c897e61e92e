"""Deployable exports of trained models, each reloaded and checked against PyTorch.

Three formats: ``onnx`` (integer weight codes with Clip/DequantizeLinear so sub-8-bit ranges
survive; Sign for binary activations), ``packed`` (weights at their own bit width, binary ones
8 per byte, with a NumPy reference inference that computes binary layers by XNOR and popcount)
and ``pt2`` (``torch.export``). ``export`` writes the file and a metadata JSON atomically.
Submodules load on first use, so naming ``FORMATS`` does not import onnx.
"""

from __future__ import annotations

import importlib

FORMATS = ("onnx", "packed", "pt2")

_WHERE = {
    "ExportResult": "exporter", "export": "exporter", "export_checkpoint": "exporter",
    "UnsupportedLayerError": "graph", "lower": "graph", "Parity": "metadata", "parity": "metadata",
}

__all__ = ["FORMATS", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"qatcore.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'qatcore.export' has no attribute {name!r}")
