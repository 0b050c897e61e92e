"""Figures for ACE/ACEv2 accounting: each returns a matplotlib Figure and never shows it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from qatcore.ace import rank_correlations
from qatcore.cost_models import AceReport

#: stacking order and colour of each role in the per-layer bars
ROLES = ("mac", "batch norm", "rescale", "quantise", "activation", "pooling", "residual add", "bias",
         "add", "scale", "softmax", "reduction")


def _roles(groups: Mapping[str, Mapping[str, float]]) -> list[str]:
    present = {role for roles in groups.values() for role in roles}
    return [role for role in ROLES if role in present] + sorted(present - set(ROLES))


def draw_layer_breakdown(axis, report: AceReport, model: str = "acev2", title: str = "") -> None:
    """Stacked bars on ``axis``: ``model``'s cost of each conv/linear layer, split by role."""
    groups = report.layer_breakdown(model)
    labels, roles = list(groups), _roles(groups)
    bottom = [0.0] * len(labels)
    for index, role in enumerate(roles):
        heights = [groups[label].get(role, 0.0) for label in labels]
        colour = "black" if role == "mac" else f"C{index % 10}"
        axis.bar(range(len(labels)), heights, bottom=bottom, color=colour, label=role, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axis.set_ylabel(model)
    axis.set_title(title or f"{model} per layer: {100 * report.elementwise_share(model):.1f}% element-wise")
    axis.legend(fontsize=7, ncols=2, loc="upper right")


def plot_layer_breakdown(report: AceReport, model: str = "acev2", title: str = "") -> Figure:
    """One report's per-layer stacked bars (MACs in black, element-wise roles in colour)."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    draw_layer_breakdown(fig.subplots(), report, model, title)
    return fig


def plot_acev2_breakdown(reports: Mapping[str, AceReport], model: str = "acev2") -> Figure:
    """Per-layer stacked bars for several reports (e.g. element-wise float vs quantised), one
    panel each on a shared y axis."""
    fig = Figure(figsize=(11, 3.2 * len(reports)), layout="constrained")
    axes = fig.subplots(len(reports), 1, sharey=True, squeeze=False)[:, 0]
    for axis, (name, report) in zip(axes, reports.items(), strict=True):
        share = 100 * report.elementwise_share(model)
        draw_layer_breakdown(axis, report, model, f"{name}: {model} {report.totals[model]:.3g}, {share:.1f}% element-wise")
    return fig


def plot_ace_vs_acev2(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """ACE (left) and ACEv2 (right) against the 45 nm energy, one point per (model, bits,
    element-wise precision) row of ``qatcore.ace.sweep``; Spearman ρ in each title."""
    rho = rank_correlations(list(rows))
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    models = list(dict.fromkeys(row["model"] for row in rows))
    for axis, metric in zip(axes, ("ace", "acev2"), strict=True):
        for index, name in enumerate(models):
            for mode, marker in (("float", "o"), ("quantised", "^")):
                chosen = [row for row in rows if row["model"] == name and row["elementwise"] == mode]
                axis.plot([row[metric] for row in chosen], [row["energy_pj"] / 1e6 for row in chosen], marker,
                          color=f"C{index}", ls="-", lw=0.8, ms=5,
                          label=f"{name}, element-wise {mode}" if metric == "ace" else None)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(metric.upper().replace("V2", "v2"))
        axis.set_title(f"{metric.upper().replace('V2', 'v2')} vs energy: Spearman ρ = {rho[metric]:.3f}")
    axes[0].set_ylabel("energy, 45 nm (µJ)")
    fig.legend(fontsize=7, loc="outside right center")
    return fig
