"""Notebook 04's widget: switch PikeLPN's techniques on and off and see the cost change (no training)."""

from __future__ import annotations

import ipywidgets as widgets

from qatcore.pikelpn import PikeLPNConfig, cost, cost_summary, default_config
from qatcore.pikelpn_plots import plot_cost_breakdown
from qatcore.widgets import live_view


def technique_view(quantnorm: bool, double_quant: bool, dhq: bool, base: PikeLPNConfig | None = None):
    """One summary line (ACE, ACEv2, energy, element-wise share) and the per-layer breakdown figure."""
    config = (default_config() if base is None else base).switched(
        quantnorm=quantnorm, double_quant=double_quant, dhq=dhq)
    report = cost(config)
    s = cost_summary(report)
    text = (f"{config.label}: ACE {s['ace']:,.0f} · ACEv2 {s['acev2']:,.0f} · "
            f"energy {s['energy_pj'] / 1e3:,.1f} nJ · element-wise share of ACEv2 {s['elementwise_share']:.0%}")
    return text, plot_cost_breakdown(report, title=config.label)


def technique_explorer(base: PikeLPNConfig | None = None) -> widgets.VBox:
    """Three check boxes (QuantNorm, Double Quantization, DHQ); the cost redraws on every change."""
    boxes = [widgets.Checkbox(value=False, description=d)
             for d in ("QuantNorm", "Double Quantization", "DHQ")]
    return live_view(boxes, lambda *switches: technique_view(*switches, base=base))
