"""The notebook-05 widget: pick a model and a batch size, see where a training step's memory goes."""

from __future__ import annotations

import ipywidgets as widgets
from matplotlib.figure import Figure

from qatcore.bnn.memory import LOW_MEMORY, STANDARD, bytes_by_kind, layer_shapes, memory_rows
from qatcore.bnn.models import MODELS
from qatcore.bnn.plots import memory_breakdown_figure
from qatcore.checks import check_choice
from qatcore.live import live_view

BATCH_RANGE = (1, 1024)
_SHAPES: dict[str, list] = {}


def breakdown_view(model: str, batch_size: int) -> tuple[str, Figure]:
    """The line and the stacked bars the widget shows for ``model`` at ``batch_size``."""
    check_choice("model", model, sorted(MODELS))
    if model not in _SHAPES:  # layer shapes do not depend on the batch: read them once
        _SHAPES[model] = layer_shapes(MODELS[model]())
    shapes = _SHAPES[model]
    breakdown = {
        mode: bytes_by_kind(memory_rows(None, batch_size, c, shapes))
        for mode, c in (("standard", STANDARD), ("low_memory", LOW_MEMORY))
    }
    ratio = sum(breakdown["standard"].values()) / sum(breakdown["low_memory"].values())
    return f"{model}, batch {batch_size}: {ratio:.2f}× less memory", memory_breakdown_figure(
        {model: breakdown}, batch_size
    )


def memory_explorer(model: str = "cnv", batch_size: int = 100) -> widgets.VBox:
    """A model dropdown and a batch-size slider that redraw the memory breakdown."""
    choose = widgets.Dropdown(options=list(MODELS), value=model, description="model")
    batch = widgets.IntSlider(
        value=batch_size, min=BATCH_RANGE[0], max=BATCH_RANGE[1], description="batch"
    )
    return live_view([choose, batch], breakdown_view)
