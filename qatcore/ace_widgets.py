"""The bit-width widget for ACE/ACEv2: thin, every callback calls qatcore.ace and qatcore.ace_plots."""

from __future__ import annotations

import ipywidgets as widgets
import torch
from torch import nn

from qatcore.ace import count
from qatcore.ace_plots import plot_layer_breakdown
from qatcore.widgets import live_view

ELEMENTWISE_BITS = (2, 4, 8, 16, 32)  # 32 is float


def breakdown_view(model: nn.Module, example_input: torch.Tensor, w_bits: int, a_bits: int,
                   elementwise_bits: int):
    """What the widget shows: a summary line and the per-layer stacked bars of ACEv2."""
    report = count(model, example_input, bits=(w_bits, a_bits), elementwise_bits=elementwise_bits)
    totals = report.totals
    ew = "float" if elementwise_bits == 32 else f"{elementwise_bits} bits"
    text = (f"W{w_bits}A{a_bits}, element-wise {ew}: ACE {totals['ace']:.3g}, ACEv2 {totals['acev2']:.3g}, "
            f"energy {totals['energy_pj'] / 1e6:.3g} µJ, {100 * report.elementwise_share():.1f}% of ACEv2 element-wise")
    return text, plot_layer_breakdown(report)


def bit_width_explorer(model: nn.Module, example_input: torch.Tensor, w_bits: int = 4, a_bits: int = 4,
                       elementwise_bits: int = 32) -> widgets.VBox:
    """Sliders for weight, activation and element-wise bits; the stacked bars update live."""
    weights = widgets.IntSlider(value=w_bits, min=1, max=8, description="weights")
    activations = widgets.IntSlider(value=a_bits, min=1, max=8, description="activations")
    elementwise = widgets.SelectionSlider(options=ELEMENTWISE_BITS, value=elementwise_bits, description="element-wise")
    return live_view([weights, activations, elementwise],
                     lambda w, a, e: breakdown_view(model, example_input, w, a, e))
