"""The one live view of every dashboard: controls above a line of text and a figure, redrawn as they move.

Every paper's widgets build on it, so it lives in the core and imports no paper. It needs
ipywidgets and IPython, which the ``course`` extra installs.
"""

from __future__ import annotations

import ipywidgets as widgets
from IPython.display import display


def live_view(controls: list[widgets.ValueWidget], view) -> widgets.VBox:
    """``controls`` in a row above a line of text and a figure, both from ``view(*values)``, redrawn
    whenever a control moves (``view`` returns ``(text, figure or None)``)."""
    label = widgets.Label()
    out = widgets.Output()

    def redraw(_=None):
        label.value, figure = view(*(control.value for control in controls))
        out.clear_output(wait=True)
        if figure is not None:
            with out:
                display(figure)

    for control in controls:
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox(controls), label, out])
