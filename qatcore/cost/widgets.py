"""The bit-width widget for ACE/ACEv2: thin, every callback calls qatcore.cost.ace and qatcore.cost.plots.

Notebook 04's widget: switch PikeLPN's techniques on and off and see the cost change (no training).
"""

from __future__ import annotations

import ipywidgets as widgets
import torch
from torch import nn

from qatcore.cost.ace import count
from qatcore.cost.pikelpn import PikeLPNConfig, cost, cost_summary, default_config
from qatcore.cost.plots import plot_cost_breakdown, plot_layer_breakdown
from qatcore.live import live_view

ELEMENTWISE_BITS = (2, 4, 8, 16, 32)  # 32 is float


def breakdown_view(
    model: nn.Module, example_input: torch.Tensor, w_bits: int, a_bits: int, elementwise_bits: int
):
    """What the widget shows: a summary line and the per-layer stacked bars of ACEv2."""
    report = count(model, example_input, bits=(w_bits, a_bits), elementwise_bits=elementwise_bits)
    totals = report.totals
    ew = "float" if elementwise_bits == 32 else f"{elementwise_bits} bits"
    text = (
        f"W{w_bits}A{a_bits}, element-wise {ew}: ACE {totals['ace']:.3g}, ACEv2 {totals['acev2']:.3g}, "
        f"energy {totals['energy_pj'] / 1e6:.3g} µJ, {100 * report.elementwise_share():.1f}% of ACEv2 element-wise"
    )
    return text, plot_layer_breakdown(report)


def bit_width_explorer(
    model: nn.Module,
    example_input: torch.Tensor,
    w_bits: int = 4,
    a_bits: int = 4,
    elementwise_bits: int = 32,
) -> widgets.VBox:
    """Sliders for weight, activation and element-wise bits; the stacked bars update live."""
    weights = widgets.IntSlider(value=w_bits, min=1, max=8, description="weights")
    activations = widgets.IntSlider(value=a_bits, min=1, max=8, description="activations")
    elementwise = widgets.SelectionSlider(
        options=ELEMENTWISE_BITS, value=elementwise_bits, description="element-wise"
    )
    return live_view(
        [weights, activations, elementwise],
        lambda w, a, e: breakdown_view(model, example_input, w, a, e),
    )


def technique_view(
    quantnorm: bool, double_quant: bool, dhq: bool, base: PikeLPNConfig | None = None
):
    """One summary line (ACE, ACEv2, energy, element-wise share) and the per-layer breakdown figure."""
    config = (default_config() if base is None else base).switched(
        quantnorm=quantnorm, double_quant=double_quant, dhq=dhq
    )
    report = cost(config)
    s = cost_summary(report)
    text = (
        f"{config.label}: ACE {s['ace']:,.0f} · ACEv2 {s['acev2']:,.0f} · "
        f"energy {s['energy_pj'] / 1e3:,.1f} nJ · element-wise share of ACEv2 {s['elementwise_share']:.0%}"
    )
    return text, plot_cost_breakdown(report, title=config.label)


def technique_explorer(base: PikeLPNConfig | None = None) -> widgets.VBox:
    """Three check boxes (QuantNorm, Double Quantization, DHQ); the cost redraws on every change."""
    boxes = [
        widgets.Checkbox(value=False, description=d)
        for d in ("QuantNorm", "Double Quantization", "DHQ")
    ]
    return live_view(boxes, lambda q, d, h: technique_view(q, d, h, base=base))
