"""The one live view of every dashboard: controls above a line of text and a figure, redrawn as they move.

Every paper's widgets build on it, so it lives in the core and imports no paper. It needs
ipywidgets and IPython, which the ``course`` extra installs.
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
from IPython.display import Image, display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

#: how far (pixels) a drawing may pass the figure's edge and still count as inside it: less than a
#: pixel shows nothing that a crop would keep
SUBPIXEL = 0.5
#: Pillow's options for a dashboard's PNG, drawn anew at every move of a control: encoded fast
FAST_PNG = {"compress_level": 1}


def rendered(figure: Figure) -> Image:
    """``figure`` as the PNG image the inline backend would show, drawn once where that is enough.

    Displaying the figure itself, the inline backend draws it twice: once to find the bounding box of
    everything drawn, once more cropped to it. Here it is drawn once; where nothing was drawn outside
    the figure (every course figure lays itself out), that drawing is the image. Only a figure that
    overflows its edges is drawn again, cropped as the inline backend crops it. A figure redrawn in
    place keeps its canvas, and with it the sizes of its texts already measured."""
    canvas = (
        figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    )
    canvas.draw()
    width, height = canvas.get_width_height()
    box = figure.get_tightbbox(canvas.get_renderer()).transformed(figure.dpi_scale_trans)
    buffer = io.BytesIO()
    slack = SUBPIXEL  # constrained layout can leave a text a fraction of a pixel past the edge
    if box.x0 < -slack or box.y0 < -slack or box.x1 > width + slack or box.y1 > height + slack:
        figure.savefig(buffer, format="png", bbox_inches="tight")
    else:
        # the fastest zlib level: a third of the encoding time, a few per cent more bytes, the same pixels
        imsave(buffer, np.asarray(canvas.buffer_rgba()), format="png", pil_kwargs=FAST_PNG)
    return Image(data=buffer.getvalue(), format="png")


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
                display(rendered(figure))

    for control in controls:
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox(controls), label, out])
