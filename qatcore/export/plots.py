"""Figures of notebook 06: export file sizes against float32, and inference latency."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from qatcore.palette import EXPORTS, RUNTIMES, colours


def _plain_log_labels(axis) -> None:
    """A log y-axis labelled in plain numbers (100, 200, …) rather than powers of ten: easier to read
    as KiB or ms, and typeset without mathtext (a redraw in a third of the time)."""
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(LogFormatter())
    axis.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def plot_export_sizes(
    sizes: Mapping[str, tuple[int, int]],
    latency_ms: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Bars of export size beside its float32 size (``{label: (size, float_size)}``, log scale),
    and, when given, latency per call by batch (``{batch: {variant: ms}}``, log scale)."""
    panels = 2 if latency_ms else 1
    fig = Figure(figsize=(5.2 * panels, 3.8), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    labels = list(sizes)
    positions = range(len(labels))
    width = 0.38
    size_axis = axes[0]
    size_axis.bar(
        [p - width / 2 for p in positions],
        [sizes[k][1] / 1024 for k in labels],
        width,
        color=EXPORTS["float32"],
        label="float32 ONNX",
    )
    bars = size_axis.bar(
        [p + width / 2 for p in positions],
        [sizes[k][0] / 1024 for k in labels],
        width,
        color=EXPORTS["export"],
        label="export",
    )
    for bar, label in zip(bars, labels, strict=True):
        size_axis.annotate(
            f"{sizes[label][1] / sizes[label][0]:.1f}×",
            (bar.get_x() + width / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    size_axis.set_xticks(list(positions), labels, rotation=20, ha="right", fontsize=8)
    _plain_log_labels(size_axis)
    size_axis.set_ylabel("file size (KiB)")
    size_axis.set_title("export size vs float32 (× = ratio)")
    size_axis.legend(fontsize=8)
    if latency_ms:
        axis = axes[1]
        batches = list(latency_ms)
        variants = list(next(iter(latency_ms.values())))
        step = 0.8 / len(variants)
        own = colours(variants, RUNTIMES)
        for i, variant in enumerate(variants):
            axis.bar(
                [b + (i - (len(variants) - 1) / 2) * step for b in range(len(batches))],
                [latency_ms[batch][variant] for batch in batches],
                step,
                color=own[variant],
                label=variant,
            )
        axis.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        _plain_log_labels(axis)
        axis.set_ylabel("ms per call")
        axis.set_title("MNIST CNN, 28×28: latency per call on a CPU")
        axis.legend(fontsize=8)
    return fig
