"""``qatcore.live.rendered``: a widget's figure as the PNG the reader sees, drawn once where that is enough."""

import io

from matplotlib.figure import Figure
from PIL import Image as PILImage

from qatcore.live import rendered


def _size(image) -> tuple[int, int]:
    return PILImage.open(io.BytesIO(image.data)).size


def _figure(title: str) -> Figure:
    fig = Figure(figsize=(4, 3), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [1, 2])
    ax.set_title(title)
    return fig


def test_a_figure_within_its_edges_is_the_drawing_itself():
    assert _size(rendered(_figure("short"))) == (400, 300)


def test_a_figure_that_overflows_its_edges_is_cropped_around_everything_as_the_inline_backend_does():
    wide = rendered(_figure("a title far wider than the four inches of its figure " * 2))
    width, height = _size(wide)
    assert width > 400  # the whole title is in the image, not cut at the figure's edge
    expected = io.BytesIO()
    _figure("a title far wider than the four inches of its figure " * 2).savefig(
        expected, format="png", bbox_inches="tight"
    )
    assert (width, height) == PILImage.open(expected).size
