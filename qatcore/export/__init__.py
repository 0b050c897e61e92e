"""Deployable exports of trained models, each reloaded and checked against PyTorch.

Four formats: ``onnx`` (standard QDQ: integer weight codes, INT4 where they fit, feeding
DequantizeLinear, their true range in ``metadata_props``; QuantizeLinear/DequantizeLinear pairs
for activation quantizers; Sign for binary activations), ``qonnx`` (QONNX ``Quant`` and
``BipolarQuant`` nodes, for FINN and hls4ml; needs the ``course`` extra), ``packed`` (weights at
their own bit width, binary ones 8 per byte, with a NumPy reference inference that computes binary
layers by XNOR and popcount) and ``pt2`` (``torch.export``). ``export`` writes the file and a
metadata JSON atomically, and only when the reloaded file matches PyTorch (``ParityError``
otherwise). Submodules load on first use, so naming ``FORMATS`` does not import onnx.
"""

from __future__ import annotations

import importlib

FORMATS = ("onnx", "qonnx", "packed", "pt2")

_WHERE = {
    "ExportResult": "exporter",
    "ParityError": "exporter",
    "export": "exporter",
    "export_checkpoint": "exporter",
    "UnsupportedLayerError": "graph",
    "lower": "graph",
    "Parity": "metadata",
    "parity": "metadata",
}

__all__ = ["FORMATS", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"qatcore.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'qatcore.export' has no attribute {name!r}")
