"""Figures of notebooks 03 (ACE/ACEv2 accounting) and 04 (PikeLPN's techniques): each returns a
matplotlib Figure and never shows it. Colours come from ``qatcore.palette``: a role (MAC, batch norm,
rescale …) has one colour in both notebooks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from qatcore.cost.cost_models import AceReport
from qatcore.cost.pikelpn import PikeLPN, separable_weights
from qatcore.cost.sweeps import rank_correlations
from qatcore.palette import CONVOLUTIONS, LADDER, OPERATIONS, colour, colours


def _roles(present: set[str]) -> list[str]:
    """The roles in ``present`` in the palette's stacking order (MACs at the bottom)."""
    return [role for role in OPERATIONS if role in present] + sorted(present - set(OPERATIONS))


def draw_layer_breakdown(axis, report: AceReport, model: str = "acev2", title: str = "") -> None:
    """Stacked bars on ``axis``: ``model``'s cost of each conv/linear layer, split by role."""
    groups = report.layer_breakdown(model)
    labels, roles = list(groups), _roles({role for roles in groups.values() for role in roles})
    bottom = [0.0] * len(labels)
    for role in roles:
        heights = [groups[label].get(role, 0.0) for label in labels]
        axis.bar(
            range(len(labels)),
            heights,
            bottom=bottom,
            color=colour(OPERATIONS, role),
            label=role,
            width=0.8,
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axis.set_ylabel(model)
    axis.set_title(
        title or f"{model} per layer: {100 * report.elementwise_share(model):.1f}% element-wise"
    )
    axis.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0)
    )  # beside the bars, hiding none


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
        draw_layer_breakdown(
            axis,
            report,
            model,
            f"{name}: {model} {report.totals[model]:.3g}, {share:.1f}% element-wise",
        )
    return fig


def plot_ace_vs_acev2(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """ACE (left) and ACEv2 (right) against the 45 nm energy, one point per (model, bits,
    element-wise precision) row of ``qatcore.cost.sweeps.sweep``; Spearman ρ in each title."""
    rho = rank_correlations(list(rows))
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    models = colours(row["model"] for row in rows)
    for axis, metric in zip(axes, ("ace", "acev2"), strict=True):
        for name, own in models.items():
            for mode, marker in (("float", "o"), ("quantised", "^")):
                chosen = [
                    row for row in rows if row["model"] == name and row["elementwise"] == mode
                ]
                axis.plot(
                    [row[metric] for row in chosen],
                    [row["energy_pj"] / 1e6 for row in chosen],
                    marker,
                    color=own,
                    ls="-",
                    lw=0.8,
                    ms=5,
                    label=f"{name}, element-wise {mode}" if metric == "ace" else None,
                )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(metric.upper().replace("V2", "v2"))
        axis.set_title(
            f"{metric.upper().replace('V2', 'v2')} vs energy: Spearman ρ = {rho[metric]:.3f}"
        )
    axes[0].set_ylabel("energy, 45 nm (µJ)")
    fig.legend(fontsize=7, loc="outside right center")
    return fig


def plot_weight_distributions(model: PikeLPN, bins: int = 60) -> Figure:
    """Depthwise vs pointwise latent weights: pooled histograms, and each conv's per-channel ranges."""
    weights = separable_weights(model)
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    pooled, ranges = fig.subplots(1, 2)
    for kind, own in CONVOLUTIONS.items():
        pooled.hist(
            weights[kind].numpy(),
            bins=bins,
            density=True,
            alpha=0.55,
            color=own,
            label=f"{kind} ({weights[kind].numel()} weights)",
        )
    pooled.set_xlabel("latent weight w")
    pooled.set_ylabel("density")
    pooled.set_title("all separable kernels, pooled")
    pooled.legend(fontsize=8)
    for position, conv in enumerate(model.separable_convs().values()):
        per_channel = conv.weight.detach().flatten(1).abs().amax(dim=1).numpy()
        kind = "depthwise" if conv.depthwise else "pointwise"
        ranges.scatter(
            [position] * len(per_channel),
            per_channel,
            s=8,
            alpha=0.6,
            color=CONVOLUTIONS[kind],
            label=kind if kind not in ranges.get_legend_handles_labels()[1] else None,
        )
    names = list(model.separable_convs())
    ranges.set_xticks(range(len(names)), names)
    ranges.set_yscale("log")
    ranges.set_ylabel("max |w| of each output channel")
    ranges.set_title("per-channel ranges")
    ranges.legend(fontsize=8)
    return fig


COST_LABELS = {
    "ace": "ACE",
    "acev2": "ACEv2",
    "sops": "sops",
    "energy_pj": "energy (pJ)",
    "macs": "MACs",
}


def plot_pareto(rows: Sequence[dict], cost: str = "acev2") -> Figure:
    """Test accuracy (mean, with ±1 sd bars when rows carry ``test_accuracy_sd``) against ``cost``
    (log scale) per model; the models on the Pareto front (nothing cheaper is as accurate) ringed."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    axis = fig.subplots()
    points = sorted(
        (
            (r[cost], 100 * r["test_accuracy"], 100 * r.get("test_accuracy_sd", 0.0), r["model"])
            for r in rows
        ),
        key=lambda p: (p[0], -p[1]),
    )  # at equal cost, the most accurate first
    own = colours((name for *_, name in points), LADDER)
    for x, y, sd, name in points:
        axis.errorbar(x, y, yerr=sd or None, fmt="o", color=own[name], capsize=3, zorder=3)
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(6, -10), fontsize=8)
    front, best = [], -math.inf
    for x, y, _, _ in points:  # cheapest first: a point is on the front if nothing cheaper beats it
        if y > best:
            front.append((x, y))
            best = y
    xs, ys = zip(*front, strict=True)
    label = "Pareto front" + (
        " (one model: the cheapest is also the most accurate)" if len(front) == 1 else ""
    )
    axis.scatter(xs, ys, s=160, facecolors="none", edgecolors="grey", zorder=4, label=label)
    if len(front) > 1:
        axis.plot(xs, ys, color="grey", lw=1, ls="--", zorder=2)
    axis.set_xscale("log")
    axis.set_xlabel(f"{COST_LABELS.get(cost, cost)} per image")
    axis.set_ylabel(
        "test accuracy (%)"
        + (", mean ± sd over seeds" if any("test_accuracy_sd" in r for r in rows) else "")
    )
    axis.legend(loc="lower right", fontsize=8)
    return fig


def plot_cost_breakdown(report: AceReport, cost: str = "acev2", title: str = "") -> Figure:
    """Per layer, ``cost`` stacked by what each operation does there (MACs, rescale, batch norm …)."""
    layers = [row["layer"] for row in report.layers()]
    roles = _roles({op.role for op in report.operations})
    totals = {role: [0.0] * len(layers) for role in roles}
    index = {name: i for i, name in enumerate(layers)}
    for op, op_cost in zip(report.operations, report.costs, strict=True):
        totals[op.role][index[op.layer]] += op_cost[cost]
    fig = Figure(figsize=(11, 4), layout="constrained")
    axis = fig.subplots()
    bottom = [0.0] * len(layers)
    for role in roles:
        axis.bar(
            range(len(layers)),
            totals[role],
            bottom=bottom,
            color=colour(OPERATIONS, role),
            label=role,
        )
        bottom = [b + t for b, t in zip(bottom, totals[role], strict=True)]
    axis.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel(f"{cost} per image")
    axis.set_title(title or f"total {cost}: {report.totals[cost]:,.0f}")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
