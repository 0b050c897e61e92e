"""Paper 1's dashboards: the twin-runs picture of notebook 01 (DSQ on the quadratic beside its
remapped STE twin), and the estimator, weight-map and equivalence views, every control at its
extremes and middle (widget callbacks are plain qatcore functions)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from strategies import examples

from qatcore import data, estimators
from qatcore.estimators.definitions import derive
from qatcore.estimators.plots import TwinRunsFigure, plot_twin_runs
from qatcore.estimators.quadratic import QuadraticProblem
from qatcore.estimators.widgets import (
    equivalence_view,
    estimator_explorer,
    estimator_view,
    twin_runs,
    twin_runs_explorer,
    twin_runs_view,
    weight_map_explorer,
    weight_map_view,
)
from qatcore.quantizers import levels, step_size, thresholds

PROBLEM = QuadraticProblem()


@given(eta=st.floats(10**-3.5, 0.1), sharpness=st.floats(0.5, 20.0), time=st.floats(0.01, 0.1))
@examples(20)
def test_twin_is_the_ste_from_the_mapped_start_at_the_factored_rate(eta, sharpness, time):
    dsq, twin, unadjusted = twin_runs(PROBLEM, eta, sharpness, time)
    w0 = PROBLEM.initial_weights()
    steps = max(1, round(time / eta))
    assert dsq.params["sharpness"] == sharpness and twin.alpha == dsq.alpha(PROBLEM.bits, PROBLEM.m)
    for pair in (twin, unadjusted):
        assert pair.custom.shape == pair.ste.shape == (steps + 1, PROBLEM.dim) and pair.eta == eta
        assert torch.equal(pair.custom[0], w0)
    assert twin.adjusted and torch.equal(twin.ste[0], dsq.weight_map(w0, PROBLEM.bits, PROBLEM.m))
    assert (
        not unadjusted.adjusted and unadjusted.alpha == 1.0 and torch.equal(unadjusted.ste[0], w0)
    )


def test_the_twin_stays_far_closer_than_the_unadjusted_ste_at_a_small_rate():
    _, twin, unadjusted = twin_runs(PROBLEM, 1e-3, 6.5, time=0.5)
    assert twin.max_gap * 20 < unadjusted.max_gap


def test_plot_draws_the_mapped_custom_run_over_the_twin_with_levels_and_thresholds():
    dsq, twin, unadjusted = twin_runs(PROBLEM, 1e-2, 6.5, time=1.0)
    fig = plot_twin_runs(twin, unadjusted, dsq, PROBLEM.bits, PROBLEM.m, samples=2)
    paths, gaps = fig.axes
    marks = 2**PROBLEM.bits + 2**PROBLEM.bits - 1  # levels and thresholds, one horizontal line each
    horizontal = [line for line in paths.lines[:marks]]
    assert sorted(float(line.get_ydata()[0]) for line in horizontal) == pytest.approx(
        sorted(
            torch.cat(
                [levels(PROBLEM.bits, PROBLEM.m), thresholds(PROBLEM.bits, PROBLEM.m)]
            ).tolist()
        )
    )
    raw, mapped, ste = paths.lines[marks : marks + 3]  # the first sampled weight: w_t, M(w_t), v_t
    column = int((twin.ste - twin.ste[0]).abs().amax(dim=0).argmax())
    time = torch.arange(len(twin.gap), dtype=torch.float64) * twin.eta
    assert raw.get_xdata() == pytest.approx(time.numpy())
    assert raw.get_ydata() == pytest.approx(twin.custom[:, column].numpy())
    assert mapped.get_ydata() == pytest.approx(
        dsq.weight_map(twin.custom[:, column], PROBLEM.bits, PROBLEM.m).numpy()
    )
    assert ste.get_ydata() == pytest.approx(twin.ste[:, column].numpy())
    assert len(paths.lines) == marks + 3 * 2
    assert gaps.get_yscale() == "log" and gaps.lines[0].get_ydata() == pytest.approx(
        twin.gap.numpy()
    )
    assert gaps.lines[1].get_ydata() == pytest.approx(unadjusted.gap.numpy())
    assert float(gaps.lines[2].get_ydata()[0]) == pytest.approx(step_size(PROBLEM.bits, PROBLEM.m))
    for axis in (paths, gaps):
        assert axis.get_ylabel() and axis.get_title() and axis.get_legend() is not None
    assert gaps.get_xlabel().startswith("training time") and "α = 0.454" in fig.get_suptitle()


def test_the_dashboards_figure_redrawn_in_place_shows_what_a_new_one_shows_in_its_first_layout():
    kept = TwinRunsFigure("dsq", PROBLEM.bits, PROBLEM.m)
    dsq, twin, unadjusted = twin_runs(PROBLEM, 1e-2, 6.5, time=0.5)
    figure = kept.show(twin, unadjusted, dsq)
    assert figure.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    FigureCanvasAgg(figure).draw()  # the first drawing lays the figure out, and the layout is kept
    assert figure.get_layout_engine().__class__.__name__ == "PlaceHolderLayoutEngine"
    laid_out = [axes.get_position().bounds for axes in figure.axes]
    title_at = kept.title.get_position()
    dsq, twin, unadjusted = twin_runs(PROBLEM, 3e-2, 2.0, time=0.9)  # other η, sharpness, length
    assert kept.show(twin, unadjusted, dsq) is figure
    figure.canvas.draw()
    assert [axes.get_position().bounds for axes in figure.axes] == laid_out
    assert kept.title.get_position() == title_at
    fresh = plot_twin_runs(twin, unadjusted, dsq, PROBLEM.bits, PROBLEM.m)
    assert figure.get_suptitle() == fresh.get_suptitle() and "sharpness 2" in fresh.get_suptitle()
    for old, new in zip(figure.axes, fresh.axes, strict=True):
        assert old.get_title() == new.get_title() and old.get_xlim() == new.get_xlim()
        assert old.get_ylim() == pytest.approx(new.get_ylim())
        assert len(old.lines) == len(new.lines)
        for a, b in zip(old.lines, new.lines, strict=True):
            assert np.array_equal(a.get_xdata(), b.get_xdata())
            assert np.array_equal(a.get_ydata(), b.get_ydata())


@pytest.mark.parametrize(("eta", "sharpness"), [(10**-3.5, 0.5), (1e-2, 6.5), (0.1, 20.0)])
def test_view_at_the_sliders_extremes_and_middle(eta, sharpness):
    text, figure = twin_runs_view(eta, sharpness, PROBLEM, time=0.05)
    alpha = estimators.get("dsq", sharpness=sharpness).alpha(PROBLEM.bits, PROBLEM.m)
    assert isinstance(figure, Figure) and text.startswith(
        f"DSQ, sharpness {sharpness:g}, η = {eta:.2g}"
    )
    assert f"α = {alpha:.3g}" in text and f"{max(1, round(0.05 / eta))} step" in text


def test_explorer_starts_at_the_authors_sharpness_and_redraws_when_a_slider_moves():
    box = twin_runs_explorer(PROBLEM, 1e-2, time=0.1)
    (rate, sharp), label = box.children[0].children, box.children[1]
    assert sharp.value == estimators.dsq_default_sharpness(PROBLEM.bits) == 6.5
    assert (
        not rate.continuous_update and not sharp.continuous_update
    )  # each redraw trains: on release only
    assert label.value.startswith("DSQ, sharpness 6.5, η = 0.01, 10 steps: α = 0.454")
    sharp.value = 15.0
    assert label.value.startswith("DSQ, sharpness 15, η = 0.01, 10 steps: α = 0.00")
    rate.value = 0.1
    assert label.value.startswith("DSQ, sharpness 15, η = 0.1, 1 step:")


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: twin_runs(PROBLEM, 0.0, 6.5), "eta"),
        (lambda: twin_runs(PROBLEM, 1e-2, -1.0), "sharpness"),
        (lambda: twin_runs(PROBLEM, 1e-2, 6.5, time=0.0), "time"),
    ],
)
def test_bad_arguments_are_named(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


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
    assert len(figure.axes[1].lines) == (1 if name == "ste" else 2)  # the curves
    (marks,) = figure.axes[1].collections  # the rounding thresholds, one artist for all
    drawn_at = sorted(float(segment[0][0]) for segment in marks.get_segments())
    assert drawn_at == pytest.approx(thresholds(bits, 1.0).tolist())


def test_the_weight_map_explorer_derives_every_estimator_before_the_first_pick():
    derive.cache_clear()  # as in a fresh kernel: nothing derived yet
    weight_map_explorer("dsq", 2)
    before = derive.cache_info()
    for name in estimators.names():
        derive(estimators.definition(name))
    after = derive.cache_info()
    assert after.misses == before.misses  # nothing left to derive when the reader picks one
    assert after.hits == before.hits + len(estimators.names())


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
