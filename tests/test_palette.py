"""The course's colours: every figure takes a run's, an operation's or a variable's colour from
``qatcore.palette``, so one name has one colour in every panel and notebook.

The figures are drawn from small real inputs and their artists read back by label: a plot that
chose its own colours fails here.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.colors import to_hex
from strategies import examples
from torch import nn

from qatcore import data, estimators, runtime, zoo
from qatcore.architectures import MobileNetV1, ResNet18
from qatcore.bnn.memory import (
    KINDS,
    LOW_MEMORY,
    STANDARD,
    WATERFALL,
    bytes_by_kind,
    layer_shapes,
    memory_rows,
    waterfall,
)
from qatcore.bnn.models import MODES as BNN_MODES
from qatcore.bnn.plots import (
    accuracy_curves_figure,
    budgets_figure,
    memory_breakdown_figure,
    memory_vs_batch_figure,
    phases_figure,
    power_of_two_label,
    waterfall_figure,
)
from qatcore.cost import ace, sweeps
from qatcore.cost.pikelpn import LADDER as PIKELPN_LADDER
from qatcore.cost.pikelpn import PikeLPN, cost, default_config, ladder_configs
from qatcore.cost.plots import (
    plot_ace_vs_acev2,
    plot_acev2_breakdown,
    plot_cost_breakdown,
    plot_layer_breakdown,
    plot_pareto,
    plot_weight_distributions,
)
from qatcore.estimators import quadratic
from qatcore.estimators.equivalence import RUNS as EQUIVALENCE_RUNS
from qatcore.estimators.equivalence import EquivalenceConfig, run_equivalence
from qatcore.estimators.plots import (
    plot_agreement_vs_lr,
    plot_estimators,
    plot_trajectory_overlap,
    plot_twin_runs,
    plot_weight_map,
)
from qatcore.export.plots import plot_export_sizes
from qatcore.palette import (
    CONVOLUTIONS,
    ESTIMATORS,
    EXPORTS,
    GREY,
    LADDER,
    MEMORY,
    MODES,
    OPERATIONS,
    REMOVED,
    RUNS,
    RUNTIMES,
    SEQUENCE,
    colour,
    colours,
)

torch.set_num_threads(1)
MIB = 2**20
GROUPS = {
    "RUNS": RUNS,
    "ESTIMATORS": ESTIMATORS,
    "OPERATIONS": OPERATIONS,
    "LADDER": LADDER,
    "CONVOLUTIONS": CONVOLUTIONS,
    "MEMORY": MEMORY,
    "MODES": MODES,
    "EXPORTS": EXPORTS,
    "RUNTIMES": RUNTIMES,
}


def hex_of(artist_colour) -> str:
    return to_hex(artist_colour, keep_alpha=False).lower()


def drawn(axis) -> dict[str, str]:
    """Each labelled line, bar group and scatter of ``axis``: its label and its colour."""
    found = {}
    for line in axis.get_lines():
        if not line.get_label().startswith("_"):
            found[line.get_label()] = hex_of(line.get_color())
    for container in axis.containers:
        label = container.get_label()
        patches = getattr(container, "patches", None)
        if patches and label and not label.startswith("_"):
            found[label] = hex_of(patches[0].get_facecolor())
    for patch in axis.patches:
        if patch.get_label() and not patch.get_label().startswith("_"):
            found[patch.get_label()] = hex_of(patch.get_facecolor())
    for collection in axis.collections:
        label = collection.get_label()
        if label and not label.startswith("_") and len(collection.get_facecolor()):
            found[label] = hex_of(collection.get_facecolor()[0])
    return found


def expected(group: dict[str, str], labels) -> dict[str, str]:
    return {label: group[label].lower() for label in labels}


# --- the palette itself ------------------------------------------------------------------------


def test_the_palette_names_exactly_what_the_packages_name():
    assert set(EQUIVALENCE_RUNS) <= set(RUNS) and {"ablation", "ste"} <= set(RUNS)
    assert set(ESTIMATORS) == set(estimators.names())
    assert tuple(MEMORY) == KINDS
    assert tuple(MODES) == BNN_MODES
    assert set(LADDER) == set(PIKELPN_LADDER)
    assert set(ace.ROLES.values()) <= set(OPERATIONS)


class EveryRole(nn.Module):
    """A small net that makes the cost counter use every role it knows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.pool, self.linear = (
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.AvgPool2d(2),
            nn.Linear(4, 3),
        )

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)) * 0.5)
        x = self.pool(x + x) + torch.ones(1, 4, 1, 1)
        return torch.softmax(self.linear(x.mean(dim=(2, 3))), -1)


def test_every_role_the_cost_models_use_has_a_colour():
    reports = [
        ace.count(EveryRole(), torch.zeros(1, 3, 8, 8), (4, 4)),
        ace.count(ResNet18(0.25, 32, num_classes=10), torch.zeros(1, 3, 32, 32), (4, 4)),
        *(cost(config) for config in ladder_configs().values()),
    ]
    roles = {op.role for report in reports for op in report.operations}
    assert roles == set(OPERATIONS)


@pytest.mark.parametrize("name", list(GROUPS))
def test_no_two_names_of_a_group_share_a_colour(name):
    group = GROUPS[name]
    assert len(set(map(str.lower, group.values()))) == len(group)


def test_an_unknown_name_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="'custom'"):
        colour(RUNS, "adjsted")


@given(names=st.lists(st.sampled_from([*LADDER, "a", "b", "c", "d"]), max_size=8))
@examples(50)
def test_colours_keep_a_name_s_own_colour_and_never_repeat_one(names):
    chosen = colours(names, LADDER)
    assert list(chosen) == list(dict.fromkeys(names))
    assert all(chosen[name] == LADDER[name] for name in chosen if name in LADDER)
    assert len(set(chosen.values())) == len(chosen)
    assert set(chosen.values()) <= set(SEQUENCE) | set(LADDER.values())


def test_too_many_unnamed_names_are_refused():
    with pytest.raises(ValueError, match="names"):
        colours([str(i) for i in range(len(SEQUENCE) + 1)])


# --- paper 1: estimators and the equivalence experiment ----------------------------------------


def test_estimator_figures_colour_each_estimator_by_the_palette():
    backward = plot_estimators(("ste", "dsq", "pwl")).axes[1]
    assert drawn(backward) == expected(ESTIMATORS, ("ste", "dsq", "pwl"))
    left, right = plot_weight_map(("pwl", "dsq")).axes
    for name in ("pwl", "dsq"):
        assert drawn(left)[f"Q̂′ {name}"] == ESTIMATORS[name].lower()
        assert (
            next(c for label, c in drawn(right).items() if label.startswith(f"M ({name})"))
            == ESTIMATORS[name].lower()
        )


@pytest.fixture(scope="module")
def equivalence():
    runtime.configure(seed=0)
    small = data.subset(data.load_digits(), train=128, test=50)
    return run_equivalence(EquivalenceConfig(estimator="dsq", epochs=1), small, progress=False)


def test_a_run_has_one_colour_in_every_panel_of_the_trajectory_figure(equivalence):
    losses, agreement, paths, _heat, _bar = plot_trajectory_overlap(equivalence).axes
    runs = list(equivalence.runs)
    assert drawn(losses) == expected(RUNS, runs)
    custom, *others = (
        losses.get_lines()
    )  # the reference stays visible under runs that trace it (jitter)
    assert custom.get_label() == "custom" and others
    assert all(
        custom.get_linewidth() > o.get_linewidth() and custom.get_zorder() < o.get_zorder()
        for o in others
    )
    assert drawn(agreement) == {f"{name} vs custom": RUNS[name].lower() for name in runs[1:]}
    assert set(drawn(paths).values()) == {RUNS["custom"].lower(), RUNS["adjusted"].lower()}
    every_path = {hex_of(line.get_color()) for line in paths.get_lines()}
    assert every_path == {
        RUNS["custom"].lower(),
        RUNS["adjusted"].lower(),
    }  # no colour of its own per weight
    measured = plot_agreement_vs_lr([0.1, 0.2], [0.01, 0.02], 1.0).axes[0].get_lines()[0]
    assert hex_of(measured.get_color()) == RUNS["adjusted"].lower()


def test_notebook_01_s_twin_runs_take_the_run_colours():
    problem = quadratic.QuadraticProblem()
    twin = quadratic.paired_runs(problem, "dsq", 1e-2, 50)
    unadjusted = quadratic.paired_runs(problem, "dsq", 1e-2, 50, adjusted=False)
    paths, gaps = plot_twin_runs(twin, unadjusted, estimators.get("dsq"), 2, 1.0).axes
    assert {hex_of(line.get_color()) for line in paths.get_lines()[-9:]} == {
        RUNS["custom"].lower(),
        RUNS["adjusted"].lower(),
    }
    assert [hex_of(line.get_color()) for line in gaps.get_lines()[:2]] == [
        RUNS["adjusted"].lower(),
        RUNS["ablation"].lower(),
    ]


# --- paper 2: ACE/ACEv2 (notebook 03) and PikeLPN (notebook 04) --------------------------------


def test_a_role_has_one_colour_in_notebook_03_s_and_notebook_04_s_breakdowns():
    net = MobileNetV1(0.25, 32, num_classes=10)
    floats, fours = (
        ace.count(net, net.example_input(), (4, 4)),
        ace.count(net, net.example_input(), (4, 4), elementwise_bits=4),
    )
    figures = [
        plot_acev2_breakdown({"float": floats, "4-bit": fours}),
        plot_layer_breakdown(floats),
        plot_cost_breakdown(cost(ladder_configs()["4-bit, float element-wise"], float_bits=32)),
        plot_cost_breakdown(ace.count(EveryRole(), torch.zeros(1, 3, 8, 8), (4, 4))),
    ]
    seen = [drawn(axis) for figure in figures for axis in figure.axes]
    for found in seen:
        assert found == expected(OPERATIONS, found)
        assert found["mac"] == OPERATIONS["mac"].lower()
    assert list(seen[-1]) == list(
        OPERATIONS
    )  # every role, stacked in one order (MACs at the bottom)


def test_ladder_steps_and_kernel_kinds_take_their_palette_colours():
    rows = [
        {"model": name, "acev2": 10.0 * (i + 1), "test_accuracy": 0.9 + 0.01 * i}
        for i, name in enumerate(LADDER)
    ]
    axis = plot_pareto(rows).axes[0]
    points = {
        text.get_text(): hex_of(container.lines[0].get_color())
        for text, container in zip(axis.texts, axis.containers, strict=True)
    }
    assert points == expected(LADDER, LADDER)
    pooled, ranges = plot_weight_distributions(PikeLPN(default_config())).axes
    assert {label.split(" ")[0]: c for label, c in drawn(pooled).items()} == expected(
        CONVOLUTIONS, CONVOLUTIONS
    )
    assert drawn(ranges) == expected(CONVOLUTIONS, CONVOLUTIONS)


def test_a_sweep_s_networks_get_distinct_colours_from_the_sequence():
    rows = sweeps.sweep(
        {"a": MobileNetV1(0.25, 32, num_classes=10), "b": MobileNetV1(0.5, 32, num_classes=10)},
        bit_widths=(2,),
    )
    lines = plot_ace_vs_acev2(rows).axes[0].get_lines()
    by_model = {line.get_label().split(",")[0]: hex_of(line.get_color()) for line in lines}
    assert by_model == {"a": SEQUENCE[0].lower(), "b": SEQUENCE[1].lower()}


# --- paper 3: BNN memory (notebook 05) ----------------------------------------------------------


@pytest.fixture(scope="module")
def cnv():
    return zoo.build("cnv")


def test_memory_bars_colour_each_kind_of_variable_by_the_palette(cnv):
    shapes = layer_shapes(cnv)
    breakdown = {
        mode: bytes_by_kind(memory_rows(None, 10, c, shapes))
        for mode, c in (("standard", STANDARD), ("low_memory", LOW_MEMORY))
    }
    figure = memory_breakdown_figure({"cnv": breakdown, "again": breakdown}, 10)
    for axis in figure.axes:
        assert drawn(axis) == expected(MEMORY, KINDS)
        top = max(t.xy[1] for t in axis.texts)
        assert axis.get_ylim()[1] > 1.05 * top  # the totals stay clear of the title


def test_the_waterfall_ends_on_the_low_memory_total_and_every_choice_shows_what_it_removed(cnv):
    steps = waterfall(cnv, 100)
    figure = waterfall_figure(steps, "cnv")
    axis = figure.axes[0]
    bars = axis.patches
    totals = [total / MIB for _, total in steps]
    assert len(bars) == len(WATERFALL) + 1  # the start, one bar per choice, the end
    assert [t.get_text() for t in axis.get_xticklabels()] == [label for label, _ in WATERFALL] + [
        "low-memory"
    ]
    first, *choices, last = bars
    assert (first.get_y(), first.get_height()) == (0, pytest.approx(totals[0]))
    for i, bar in enumerate(
        choices, start=1
    ):  # the last choice too: it floats from the new total to the old
        assert bar.get_y() == pytest.approx(totals[i]) and bar.get_height() == pytest.approx(
            totals[i - 1] - totals[i]
        )
        assert hex_of(bar.get_facecolor()) == REMOVED.lower()
    assert (last.get_y(), last.get_height()) == (0, pytest.approx(totals[-1]))
    assert hex_of(first.get_facecolor()) == MODES["standard"].lower()
    assert hex_of(last.get_facecolor()) == MODES["low_memory"].lower()
    assert f"−{totals[-2] - totals[-1]:.1f}" in [t.get_text() for t in axis.texts]
    with pytest.raises(ValueError, match="steps"):
        waterfall_figure(steps[:1], "one step")


def test_bnn_curves_colour_each_training_mode_by_the_palette():
    figure = memory_vs_batch_figure(
        [1, 10],
        {
            "mlp": {"standard": [MIB, 2 * MIB], "low_memory": [MIB, MIB]},
            "cnv": {"standard": [MIB, 3 * MIB], "low_memory": [MIB, 2 * MIB]},
        },
    )
    assert drawn(figure.axes[0]) == {
        f"{model}, {label}": MODES[mode].lower()
        for model in ("mlp", "cnv")
        for mode, label in (("standard", "standard"), ("low_memory", "low-memory"))
    }
    curves = {
        "standard, Adam": [0.8, 0.9],
        "low-memory, Adam": [0.7, 0.9],
        "standard, Bop": [0.5, 0.9],
        "low_memory": [0.6, 0.8],
    }
    figure = accuracy_curves_figure(curves, "digits")
    assert drawn(figure.axes[0]) == {
        "standard, Adam": MODES["standard"].lower(),
        "low-memory, Adam": MODES["low_memory"].lower(),
        "standard, Bop": MODES["standard"].lower(),
        "low-memory": MODES["low_memory"].lower(),
    }
    styles = {line.get_label(): line.get_linestyle() for line in figure.axes[0].get_lines()}
    assert (
        styles["standard, Adam"] != styles["standard, Bop"]
    )  # one mode, two curves: told apart by style
    with pytest.raises(ValueError, match="mode"):
        accuracy_curves_figure({"Adam": [0.5]}, "digits")


def test_the_budgets_figure_puts_each_setting_at_its_time_and_peak_over_held():
    settings = [
        {
            "row_values": 2**18,
            "output_share": 0.6,
            "gradient_share": 0.45,
            "conv_block": 2**18,
            "peak_bytes": 25 * MIB,
            "time_ratio": 1.44,
        },
        {
            "row_values": 2**16,
            "output_share": 0.2,
            "gradient_share": 0.0,
            "conv_block": 2**15,
            "peak_bytes": 21 * MIB,
            "time_ratio": 1.8,
        },
    ]
    figure = budgets_figure(settings, 15 * MIB, 1.3, 1.5)
    axis = figure.axes[0]
    (points,) = [line for line in axis.get_lines() if line.get_marker() == "o"]
    assert list(points.get_xdata()) == [1.44, 1.8]
    assert list(points.get_ydata()) == pytest.approx([25 / 15, 21 / 15])
    assert hex_of(points.get_color()) == MODES["low_memory"].lower()
    assert [t.get_text() for t in axis.texts] == ["1", "2"]
    (key,) = figure.axes[1].texts
    assert key.get_text().splitlines()[-2:] == [
        " 1  2^18  0.60  0.45  2^18",
        " 2  2^16  0.20  0.00  2^15",
    ]
    assert (
        axis.get_xlim()[0] < 1.5 < axis.get_xlim()[1]
        and axis.get_ylim()[0] < 1.3 < axis.get_ylim()[1]
    )
    with pytest.raises(ValueError, match="settings"):
        budgets_figure([], 15 * MIB, 1.3, 1.5)


def test_the_phases_figure_draws_the_low_memory_step_at_each_moment_and_the_target():
    low = {
        "between_steps": 3 * MIB,
        "forward": 4 * MIB,
        "backward": 5 * MIB,
        "optimizer": 3.5 * MIB,
    }
    standard = {
        "between_steps": 7 * MIB,
        "forward": 6 * MIB,
        "backward": 8 * MIB,
        "optimizer": 9 * MIB,
    }
    entry = {"standard": {**standard, "peak": 9 * MIB}, "low_memory": low}
    figure = phases_figure(
        [{"model": "mlp", **entry}, {"model": "cnv", **entry}], {"mlp": 3.25 * MIB}
    )
    mlp, cnv = figure.axes
    assert drawn(mlp) == {"low-memory": MODES["low_memory"].lower(), "target peak": GREY.lower()}
    assert "target peak" not in drawn(cnv)
    (bars,) = mlp.containers
    assert [p.get_height() for p in bars.patches] == [3, 4, 5, 3.5]
    assert [line.get_ydata()[0] for line in mlp.get_lines()] == [3.25]
    assert "standard peak 9.0 MiB" in mlp.get_title()
    with pytest.raises(ValueError, match="models"):
        phases_figure([])


def test_a_setting_is_labelled_a_power_of_two_only_where_it_is_one():
    assert [power_of_two_label(n) for n in (1, 2**15, 2**18)] == ["2^0", "2^15", "2^18"]
    assert [power_of_two_label(n) for n in (100_000, 3, 0)] == ["100000", "3", "0"]
    figure = budgets_figure(
        [
            {
                "row_values": 100_000,
                "output_share": 0.5,
                "gradient_share": 0.5,
                "conv_block": 2**16,
                "peak_bytes": 20 * MIB,
                "time_ratio": 1.6,
            }
        ],
        15 * MIB,
        1.3,
        1.5,
    )
    (key,) = figure.axes[1].texts
    assert key.get_text().splitlines()[-1] == " 1  100000  0.50  0.50  2^16"


# --- export (notebook 06) -----------------------------------------------------------------------


def test_export_sizes_and_runtimes_take_their_palette_colours():
    latency = {"1": {name: 1.0 for name in RUNTIMES}, "256": {name: 9.0 for name in RUNTIMES}}
    sizes, times = plot_export_sizes(
        {"CNN ONNX": (100, 3200), "BNN packed": (10, 3200)}, latency
    ).axes
    assert drawn(sizes) == {
        "float32 ONNX": EXPORTS["float32"].lower(),
        "export": EXPORTS["export"].lower(),
    }
    assert drawn(times) == expected(RUNTIMES, RUNTIMES)
