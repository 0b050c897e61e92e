"""Figures of notebook 05 (BNN training memory); each returns a matplotlib Figure and never shows it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from qatcore.bnn.memory import KINDS

MIB = 2**20
MODE_LABELS = {"standard": "standard", "low_memory": "low-memory"}


def _stacked_bars(ax, breakdown: dict[str, dict[str, int]]) -> None:
    """One bar per mode, stacked by kind of variable, in MiB."""
    modes = list(breakdown)
    bottom = np.zeros(len(modes))
    colors = plt.get_cmap("tab10").colors
    for i, kind in enumerate(KINDS):
        heights = np.array([breakdown[m].get(kind, 0) / MIB for m in modes])
        ax.bar([MODE_LABELS.get(m, m) for m in modes], heights, bottom=bottom, color=colors[i], label=kind)
        bottom += heights
    for x, total in enumerate(bottom):
        ax.annotate(f"{total:.1f}", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("MiB")


def memory_breakdown_figure(breakdowns: dict[str, dict[str, dict[str, int]]], batch_size: int) -> Figure:
    """Per model, standard vs low-memory bars stacked by variable kind (``bytes_by_kind`` per mode)."""
    fig, axes = plt.subplots(1, len(breakdowns), figsize=(3.6 * len(breakdowns), 3.8), squeeze=False)
    for ax, (name, breakdown) in zip(axes[0], breakdowns.items(), strict=False):
        _stacked_bars(ax, breakdown)
        ratio = sum(breakdown["standard"].values()) / sum(breakdown["low_memory"].values())
        ax.set_title(f"{name}: {ratio:.2f}× less")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Memory of one training step, batch {batch_size} (analytic model)")
    fig.tight_layout()
    return fig


def waterfall_figure(steps: list[tuple[str, int]], title: str) -> Figure:
    """Total bytes after each of the paper's choices in turn; each bar shows what the choice removed."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    totals = [total / MIB for _, total in steps]
    for i, (_label, total) in enumerate(zip([s[0] for s in steps], totals, strict=False)):
        if i == 0 or i == len(steps) - 1:
            ax.bar(i, total, color="tab:blue" if i == 0 else "tab:green")
        else:
            ax.bar(i, totals[i - 1] - total, bottom=total, color="tab:red")
        ax.annotate(f"{total:.1f}", (i, total), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(steps)), [label for label, _ in steps], rotation=15, fontsize=8)
    ax.set_ylabel("MiB")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def memory_vs_batch_figure(
    batches: list[int], modelled: dict[str, dict[str, list[int]]],
    measured: dict[str, dict[str, tuple[int, int]]] | None = None,
) -> Figure:
    """Modelled bytes against batch size (a line per model and mode) and measured points on top.

    ``modelled[model][mode]`` holds one total per batch; ``measured[model][mode]`` is ``(batch, bytes)``.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = dict(zip(modelled, plt.get_cmap("tab10").colors, strict=False))
    for name, modes in modelled.items():
        for mode, totals in modes.items():
            style = "-" if mode == "standard" else "--"
            ax.plot(batches, np.array(totals) / MIB, style, color=colors[name], label=f"{name}, {MODE_LABELS[mode]}")
    for name, modes in (measured or {}).items():
        for mode, (batch, held) in modes.items():
            ax.plot(batch, held / MIB, "o" if mode == "standard" else "s", color=colors[name], mfc="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("MiB held by a training step")
    ax.set_title("Analytic model (lines) and measured steps (markers)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_curves_figure(curves: dict[str, list[float]], dataset: str) -> Figure:
    """Test accuracy after each epoch, one line per training mode."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for mode, accuracies in curves.items():
        ax.plot(range(1, len(accuracies) + 1), 100 * np.array(accuracies), "o-", label=MODE_LABELS.get(mode, mode))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"BNN MLP on {dataset}: both training algorithms")
    ax.legend()
    fig.tight_layout()
    return fig
