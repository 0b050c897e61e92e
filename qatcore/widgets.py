"""ipywidgets dashboards for the notebooks: thin, every callback calls qatcore's plots and logic."""

from __future__ import annotations

import ipywidgets as widgets
from IPython.display import display

from qatcore import estimators
from qatcore.plots import plot_weight_map


def describe_weight_map(name: str, bits: int, m: float = 1.0) -> str:
    """One line per estimator: α and how it was computed, or why no weight map exists."""
    est = estimators.get(name)
    try:
        return f"{name}, {bits} bits: α = {est.alpha(bits, m):.4f} ({est.map_method})"
    except ValueError as refusal:
        return f"{name}, {bits} bits: {refusal}"


def weight_map_view(name: str, bits: int, m: float = 1.0):
    """What the weight-map explorer shows: a description and, where a map exists, its figure."""
    text = describe_weight_map(name, bits, m)
    try:
        figure = plot_weight_map((name,), bits, m)
    except ValueError:
        figure = None
    return text, figure


def weight_map_explorer(name: str = "dsq", bits: int = 2) -> widgets.VBox:
    """Pick an estimator and a bit width; see Q̂′, 1/Q̂′, M and α (or why there is no map)."""
    choose = widgets.Dropdown(options=estimators.names(), value=name, description="estimator")
    width = widgets.IntSlider(value=bits, min=1, max=8, description="bits")
    label = widgets.Label()
    out = widgets.Output()

    def redraw(_=None):
        label.value, figure = weight_map_view(choose.value, width.value)
        out.clear_output(wait=True)
        if figure is not None:
            with out:
                display(figure)

    choose.observe(redraw, names="value")
    width.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([choose, width]), label, out])
