"""Widget callbacks are plain qatcore functions: every control at its extremes and middle works."""

import pytest
from matplotlib.figure import Figure

from qatcore import data, estimators
from qatcore.estimators.widgets import (
    equivalence_view,
    estimator_explorer,
    estimator_view,
    weight_map_explorer,
    weight_map_view,
)


@pytest.mark.parametrize("name", estimators.names())
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_weight_map_view_gives_a_figure_or_the_reason(name, bits):
    text, figure = weight_map_view(name, bits)
    if name in ("approx_sign", "ewgs"):
        assert figure is None and "no weight map" in text
    else:
        assert isinstance(figure, Figure) and f"{bits} bits: α = " in text


@pytest.mark.parametrize("name", estimators.names())
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_estimator_view_draws_every_estimator_at_every_width(name, bits):
    text, figure = estimator_view(name, bits)
    assert isinstance(figure, Figure) and f"{2**bits} levels" in text
    assert (
        len(figure.axes[1].lines) == (1 if name == "ste" else 2) + 2**bits - 1
    )  # curves + thresholds


def test_estimator_explorer_redraws_when_a_control_moves():
    box = estimator_explorer("dsq", 2)
    (choose, width), label = box.children[0].children, box.children[1]
    assert label.value == "dsq vs ste, 2 bits: 4 levels, Δ = 0.6667"
    width.value = 8
    choose.value = "ewgs"
    assert label.value.startswith("ewgs vs ste, 8 bits: 256 levels, Δ = 0.007843")


def test_explorer_redraws_when_a_control_moves():
    box = weight_map_explorer("dsq", 2)
    controls, label, _ = box.children
    choose, width = controls.children
    assert label.value.startswith("dsq, 2 bits: α = 0.4544")
    width.value = 8
    assert label.value.startswith("dsq, 8 bits: α = ")
    choose.value = "ewgs"
    assert "no weight map" in label.value


@pytest.mark.parametrize(
    ("name", "bits", "optimizer", "lr"),
    [
        ("dsq", 1, "sgd", 1e-4),
        ("pwl", 4, "adam", 1e-1),
        ("ewgs", 2, "sgd", 1e-2),
        ("approx_sign", 2, "adam", 1e-3),
    ],
)
def test_equivalence_view_at_the_controls_extremes(name, bits, optimizer, lr):
    small = data.subset(data.load_digits(), train=128, test=50)
    text, figure = equivalence_view(name, bits, optimizer, lr, epochs=1, data=small, progress=False)
    label = {"sgd": "SGD, momentum 0.9", "adam": "Adam"}[
        optimizer
    ]  # "sgd" is training's SGD everywhere
    assert isinstance(figure, Figure) and text.startswith(
        f"{name}, {bits} bits, {label}, lr {lr:g}"
    )
    assert ("no remapped STE run" in text) == (name in ("ewgs", "approx_sign"))
