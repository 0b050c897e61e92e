"""Widget callbacks are plain qatcore functions: every control at its extremes and middle works."""

import pytest
from matplotlib.figure import Figure

from qatcore import estimators
from qatcore.widgets import weight_map_explorer, weight_map_view


@pytest.mark.parametrize("name", estimators.names())
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_weight_map_view_gives_a_figure_or_the_reason(name, bits):
    text, figure = weight_map_view(name, bits)
    if name in ("approx_sign", "ewgs"):
        assert figure is None and "no weight map" in text
    else:
        assert isinstance(figure, Figure) and f"{bits} bits: α = " in text


def test_explorer_redraws_when_a_control_moves():
    box = weight_map_explorer("dsq", 2)
    controls, label, _ = box.children
    choose, width = controls.children
    assert label.value.startswith("dsq, 2 bits: α = 0.4544")
    width.value = 8
    assert label.value.startswith("dsq, 8 bits: α = ")
    choose.value = "ewgs"
    assert "no weight map" in label.value
