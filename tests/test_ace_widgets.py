"""The ACE bit-width widget and figures: every control at its extremes and middle gives a figure."""

import pytest
import torch
from matplotlib.figure import Figure

from qatcore.architectures import MobileNetV1
from qatcore.cost import ace, sweeps
from qatcore.cost.plots import plot_ace_vs_acev2, plot_acev2_breakdown
from qatcore.cost.widgets import ELEMENTWISE_BITS, bit_width_explorer, breakdown_view

torch.set_num_threads(1)
MODEL = MobileNetV1(0.25, 32, num_classes=10)
X = MODEL.example_input()


@pytest.mark.parametrize(
    ("w_bits", "a_bits", "elementwise_bits"), [(1, 1, 2), (4, 4, 8), (8, 8, 32), (1, 8, 16)]
)
def test_breakdown_view_at_the_controls_extremes(w_bits, a_bits, elementwise_bits):
    text, figure = breakdown_view(MODEL, X, w_bits, a_bits, elementwise_bits)
    report = ace.count(MODEL, X, (w_bits, a_bits), elementwise_bits=elementwise_bits)
    assert isinstance(figure, Figure) and text.startswith(f"W{w_bits}A{a_bits}, element-wise ")
    assert f"ACEv2 {report.totals['acev2']:.3g}" in text
    bars = figure.axes[0].patches  # one bar per conv/linear layer and role
    assert sum(bar.get_height() for bar in bars) == pytest.approx(report.totals["acev2"])


def test_explorer_redraws_when_a_control_moves():
    box = bit_width_explorer(MODEL, X)
    controls, label, _ = box.children
    weights, activations, elementwise = controls.children
    assert label.value.startswith("W4A4, element-wise float")
    weights.value, activations.value = 1, 8
    assert label.value.startswith("W1A8, element-wise float")
    before = label.value
    elementwise.value = ELEMENTWISE_BITS[0]
    assert label.value.startswith("W1A8, element-wise 2 bits") and label.value != before


def test_figures_show_every_model_and_the_rank_correlation():
    rows = sweeps.sweep({"a": MODEL, "b": MobileNetV1(0.5, 32, num_classes=10)}, bit_widths=(2, 4))
    figure = plot_ace_vs_acev2(rows)
    rho = sweeps.rank_correlations(rows)
    assert f"Spearman ρ = {rho['acev2']:.3f}" in figure.axes[1].get_title()
    assert len(figure.axes[0].lines) == 4  # two models × float/quantised element-wise
    floats = ace.count(MODEL, X, (4, 4))
    fours = ace.count(MODEL, X, (4, 4), elementwise_bits=4)
    figure = plot_acev2_breakdown({"float": floats, "4-bit": fours})
    assert len(figure.axes) == 2 and "element-wise" in figure.axes[0].get_title()
