"""Notebook 06's dashboard: export the trained CNN at another bit width and format, see size and parity."""

from __future__ import annotations

import copy
import tempfile

import ipywidgets as widgets
import torch
from torch import nn

from qatcore.estimators.layers import quantized_layers
from qatcore.export import FORMATS, export
from qatcore.export.plots import plot_export_sizes
from qatcore.live import live_view
from qatcore.quantizers import check_bits


def requantized(model: nn.Module, bits: int) -> nn.Module:
    """A copy of ``model`` whose quantized layers round the same latent weights to ``bits`` bits."""
    check_bits(bits)
    copied = copy.deepcopy(model)
    for layer in quantized_layers(copied).values():
        layer.bits = bits
    return copied


def export_view(model: nn.Module, x: torch.Tensor, y: torch.Tensor, format: str, bits: int):
    """Export ``model`` re-quantized to ``bits`` in ``format`` (to a temporary folder); return a
    line with size, accuracy and parity, and the size figure."""
    with tempfile.TemporaryDirectory() as folder:
        result = export(requantized(model, bits), folder, format, x, y, name="cnn")
    p = result.parity
    exported = (result.metadata.get("accuracy") or {}).get("export")
    text = (
        f"{bits}-bit CNN as {format}: {result.size_bytes:,} bytes, {result.size_ratio:.2f}× smaller than "
        f"float32; predictions agree on {p.prediction_agreement:.1%}, max |Δlogit| {p.max_abs_diff:.1e}"
        + (f"; accuracy {100 * exported:.1f} %" if isinstance(exported, float) else "")
    )
    figure = plot_export_sizes(
        {f"{bits}-bit {format}": (result.size_bytes, result.float_size_bytes)}
    )
    return text, figure


def export_explorer(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: int = 2
) -> widgets.VBox:
    """Pick a format and a bit width (2–8); the trained CNN is re-quantized, exported and checked."""
    choose = widgets.Dropdown(options=FORMATS, value="onnx", description="format")
    width = widgets.IntSlider(value=bits, min=2, max=8, description="bits")
    return live_view([choose, width], lambda format, bits: export_view(model, x, y, format, bits))
