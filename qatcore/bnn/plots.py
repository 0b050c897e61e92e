"""Figures of notebook 05 (BNN training memory); each returns a matplotlib Figure. Colours come from
``qatcore.palette``: a kind of variable, or a training mode, has one colour in every figure."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from qatcore.bnn.memory import KINDS
from qatcore.palette import GREY, MEMORY, MODES, REMOVED, colour

MIB = 2**20
MODE_LABELS = {"standard": "standard", "low_memory": "low-memory"}
#: the moments of a training step at which ``phases_figure`` shows the resident set (the keys of
#: ``qatcore.bnn.measure.phase_peaks_in_this_process``'s readings)
PHASE_LABELS = {
    "between_steps": "between\nsteps",
    "forward": "forward",
    "backward": "backward",
    "optimizer": "optimiser\nstep",
}


def power_of_two_label(n: int) -> str:
    """``2^k`` for a power of two ``n`` (a chunk's or a weight block's values), else ``n``'s digits."""
    n = int(n)
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


def mode_of(name: str) -> str:
    """The training mode a curve's name means: the mode itself, or the mode whose label starts it."""
    for mode, label in MODE_LABELS.items():
        if name == mode or name.startswith(label):
            return mode
    raise ValueError(
        f"name must be a mode or start with one of {list(MODE_LABELS.values())}, got {name!r}"
    )


def _stacked_bars(ax, breakdown: dict[str, dict[str, int]]) -> None:
    """One bar per mode, stacked by kind of variable, in MiB."""
    modes = list(breakdown)
    bottom = np.zeros(len(modes))
    for kind in KINDS:
        heights = np.array([breakdown[m].get(kind, 0) / MIB for m in modes])
        ax.bar(
            [MODE_LABELS.get(m, m) for m in modes],
            heights,
            bottom=bottom,
            color=colour(MEMORY, kind),
            label=kind,
        )
        bottom += heights
    for x, total in enumerate(bottom):
        ax.annotate(f"{total:.1f}", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.12 * bottom.max())  # room for the totals under the title
    ax.set_ylabel("MiB")


def memory_breakdown_figure(
    breakdowns: dict[str, dict[str, dict[str, int]]], batch_size: int
) -> Figure:
    """Per model, standard vs low-memory bars stacked by variable kind (``bytes_by_kind`` per mode)."""
    fig = Figure(figsize=(3.6 * len(breakdowns) + 1.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(breakdowns), squeeze=False)
    for ax, (name, breakdown) in zip(axes[0], breakdowns.items(), strict=False):
        _stacked_bars(ax, breakdown)
        ratio = sum(breakdown["standard"].values()) / sum(breakdown["low_memory"].values())
        ax.set_title(f"{name}: {ratio:.2f}× less")
    axes[0][-1].legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )  # beside the bars, hiding none
    fig.suptitle(f"Memory of one training step, batch {batch_size} (analytic model)")
    return fig


def waterfall_figure(steps: list[tuple[str, int]], title: str, end: str = "low-memory") -> Figure:
    """``steps`` (``qatcore.bnn.memory.waterfall``: the total bytes at the start, then after each of the
    paper's choices in turn) as a waterfall: the standard total, one floating bar per choice spanning
    what it removed, and the final total as its own bar, labelled ``end``."""
    if len(steps) < 2:
        raise ValueError(f"steps must hold a start and at least one choice, got {len(steps)}")
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    totals = [total / MIB for _, total in steps]
    ax.bar(0, totals[0], color=MODES["standard"], label="standard")
    ax.annotate(f"{totals[0]:.1f}", (0, totals[0]), ha="center", va="bottom", fontsize=8)
    for i in range(1, len(steps)):
        removed = totals[i - 1] - totals[i]
        ax.bar(
            i,
            removed,
            bottom=totals[i],
            color=REMOVED,
            edgecolor=GREY,
            label="removed by the choice" if i == 1 else None,
        )
        ax.annotate(f"−{removed:.1f}", (i, totals[i - 1]), ha="center", va="bottom", fontsize=8)
    last = len(steps)
    ax.bar(last, totals[-1], color=MODES["low_memory"], label=end)
    ax.annotate(f"{totals[-1]:.1f}", (last, totals[-1]), ha="center", va="bottom", fontsize=8)
    labels = [label for label, _ in steps] + [end]
    ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylim(0, 1.1 * max(totals))
    ax.legend(fontsize=7)
    ax.set_ylabel("MiB")
    ax.set_title(title)
    return fig


def memory_vs_batch_figure(
    batches: list[int],
    modelled: dict[str, dict[str, list[int]]],
    measured: dict[str, dict[str, tuple[int, int]]] | None = None,
) -> Figure:
    """Modelled bytes against batch size (a line per model and mode) and measured points on top.

    ``modelled[model][mode]`` holds one total per batch; ``measured[model][mode]`` is ``(batch, bytes)``.
    """
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    styles = dict(zip(modelled, (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")), strict=False))
    if len(styles) < len(modelled):
        raise ValueError(f"modelled: at most {len(styles)} models, got {len(modelled)}")
    for name, modes in modelled.items():
        for mode, totals in modes.items():
            ax.plot(
                batches,
                np.array(totals) / MIB,
                styles[name][0],
                color=colour(MODES, mode),
                label=f"{name}, {MODE_LABELS[mode]}",
            )
    for name, points in (measured or {}).items():
        for mode, (batch, held) in points.items():
            ax.plot(batch, held / MIB, styles[name][1], color=colour(MODES, mode), mfc="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("MiB held by a training step")
    ax.set_title("Analytic model (lines) and measured steps (markers)")
    ax.legend(fontsize=7, ncols=3)
    return fig


def accuracy_curves_figure(curves: dict[str, list[float]], dataset: str) -> Figure:
    """Test accuracy after each epoch, one line per curve. A curve's name is a mode (``standard``,
    ``low_memory``) or starts with a mode's label (``"low-memory, Bop"``), which gives its colour;
    curves of the same mode differ in line style and marker."""
    fig = Figure(figsize=(5.5, 3.5), layout="constrained")
    ax = fig.subplots()
    seen: dict[str, int] = {}
    for name, accuracies in curves.items():
        mode = mode_of(name)
        style = ("o-", "s--", "^:", "D-.", "v-")[seen.get(mode, 0) % 5]
        seen[mode] = seen.get(mode, 0) + 1
        ax.plot(
            range(1, len(accuracies) + 1),
            100 * np.array(accuracies),
            style,
            color=MODES[mode],
            label=MODE_LABELS.get(name, name),
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"BNN MLP on {dataset}: both training algorithms")
    ax.legend()
    return fig


def budgets_figure(
    settings: list[dict], held_bytes: int, peak_target: float, time_target: float
) -> Figure:
    """The streamed step's trade: each setting of its chunks and budgets (``row_values``, ``output_share``,
    ``gradient_share``, ``conv_block``, with its measured ``peak_bytes`` and ``time_ratio``) as a numbered point, time
    against peak over what the step holds, the settings listed by number beside it; dashed lines at the two targets,
    the corner where both are met shaded."""
    if not settings:
        raise ValueError("settings must hold at least one measured setting")
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax, key = fig.subplots(1, 2, width_ratios=[3, 1.3])
    times = [s["time_ratio"] for s in settings]
    peaks = [s["peak_bytes"] / held_bytes for s in settings]
    ax.plot(times, peaks, "o", color=MODES["low_memory"])
    for n, (t, p) in enumerate(zip(times, peaks, strict=True), start=1):
        ax.annotate(str(n), (t, p), textcoords="offset points", xytext=(4, 4), fontsize=8)
    low_x, high_x = min(1.0, min(times) - 0.05), max(time_target, max(times)) + 0.15
    low_y, high_y = min(1.0, min(peaks) - 0.05), max(peak_target, max(peaks)) + 0.1
    ax.axvline(time_target, ls="--", color=GREY)
    ax.axhline(peak_target, ls="--", color=GREY)
    ax.fill_between(
        [low_x, time_target], low_y, peak_target, color=REMOVED, alpha=0.5, label="both targets met"
    )
    ax.set_xlim(low_x, high_x)
    ax.set_ylim(low_y, high_y)
    ax.set_xlabel("low-memory step time / standard step time")
    ax.set_ylabel("peak / held")
    ax.set_title("The streamed step: memory against time")
    ax.legend(fontsize=7, loc="upper right")
    key.axis("off")
    rows = [
        f"{n:>2}  {power_of_two_label(s['row_values'])}  {s['output_share']:.2f}  {s['gradient_share']:.2f}  "
        f"{power_of_two_label(s['conv_block'])}"
        for n, s in enumerate(settings, start=1)
    ]
    heading = "chunk, output share,\ngradient share, weight block\n"
    key.text(0, 1, heading + "\n".join(rows), va="top", family="monospace", fontsize=7)
    return fig


def phases_figure(models: list[dict], targets: dict[str, float] | None = None) -> Figure:
    """Per model (``{"model": name, "standard": readings, "low_memory": readings}``, the readings in bytes keyed as
    ``PHASE_LABELS``, the standard mode's with its ``peak``), the low-memory step's resident set at each moment of a
    step, a bar each in MiB, the standard step's peak named in the title; a dashed line at a model's low-memory
    target peak in ``targets`` (bytes)."""
    if not models:
        raise ValueError("models must hold at least one measured model")
    fig = Figure(figsize=(3.4 * len(models) + 0.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, entry in zip(axes, models, strict=True):
        heights = [entry["low_memory"][moment] / MIB for moment in PHASE_LABELS]
        bars = ax.bar(
            list(PHASE_LABELS.values()),
            heights,
            color=colour(MODES, "low_memory"),
            label="low-memory",
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        top = max(heights)
        if targets and entry["model"] in targets:
            target = targets[entry["model"]] / MIB
            ax.axhline(target, ls="--", color=GREY, label="target peak")
            top = max(top, target)
        ax.set_ylim(0, 1.15 * top)  # room for the bars' values
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(
            f"{entry['model']} (standard peak {entry['standard']['peak'] / MIB:.1f} MiB)",
            fontsize=9,
        )
    axes[0].set_ylabel("MiB over the process before the model")
    axes[0].legend(fontsize=7, loc="lower right")
    return fig
