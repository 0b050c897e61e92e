"""``qatcore.live.rendered``: a widget's figure as the PNG the reader sees, drawn once where that is enough."""

import io

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
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


def _past_the_edge(pixels: float) -> Figure:
    """A figure with a bar reaching ``pixels`` past its right edge (400 pixels wide)."""
    fig = Figure(figsize=(4, 3), dpi=100)
    fig.add_artist(Rectangle((0.5, 0.4), 0.5 + pixels / 400, 0.2, clip_on=False))
    return fig


def test_a_fraction_of_a_pixel_past_the_edge_counts_as_inside():
    # constrained layout can leave a text a tenth of a pixel past the edge: that is no overflow,
    # and the figure is drawn once
    assert _size(rendered(_past_the_edge(0.2))) == (400, 300)
    cropped = io.BytesIO()  # three pixels past it: cropped as the inline backend crops it
    _past_the_edge(3).savefig(cropped, format="png", bbox_inches="tight")
    assert _size(rendered(_past_the_edge(3))) == PILImage.open(cropped).size != (400, 300)
