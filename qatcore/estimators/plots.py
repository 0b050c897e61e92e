"""Figure functions for the course: each returns a matplotlib Figure and never shows it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from qatcore import estimators
from qatcore.palette import ESTIMATORS, RUNS, colour
from qatcore.quantizers import levels, step_size, thresholds, uniform_quantize


def surrogate(
    estimator: estimators.Estimator, w: torch.Tensor, bits: int, m: float
) -> torch.Tensor:
    """``Q̂(w) = -m + ∫_{-m}^{w} Q̂′``: the smooth function whose slope the estimator uses
    (trapezoid rule on the sorted grid ``w``)."""
    slope = estimator.derivative(w, bits, m, grad_sign=torch.ones_like(w))
    steps = torch.diff(w) * (slope[1:] + slope[:-1]) / 2
    inside = torch.cat([torch.zeros(1, dtype=w.dtype), torch.cumsum(steps, 0)])
    start = int(torch.searchsorted(w, torch.tensor(-m, dtype=w.dtype)))
    return -m + inside - inside[min(start, len(w) - 1)]


def _mark_thresholds(axis, bits: int, m: float) -> None:
    """The rounding thresholds as dotted verticals spanning the axis: one collection (at 8 bits, 255
    lines drawn as one artist rather than 255)."""
    xs = thresholds(bits, m).numpy()
    axis.vlines(xs, 0, 1, transform=axis.get_xaxis_transform(), color="grey", lw=0.6, ls=":")


def plot_estimators(
    names: Sequence[str] = ("ste", "dsq"), bits: int = 2, m: float = 1.0, points: int = 1201
) -> Figure:
    """Forward (``Q`` and each estimator's surrogate ``Q̂``) beside backward (``Q̂′``)."""
    chosen = [estimators.get(name) for name in names]
    w = torch.linspace(-1.25 * m, 1.25 * m, points, dtype=torch.float64)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    forward, backward = fig.subplots(1, 2)
    forward.plot(w, uniform_quantize(w, bits, m), color="black", lw=2, label="Q(w)")
    for est in chosen:
        own = colour(ESTIMATORS, est.name)
        forward.plot(w, surrogate(est, w, bits, m), color=own, lw=1.4, label=f"Q̂ ({est.name})")
        backward.plot(
            w,
            est.derivative(w, bits, m, grad_sign=torch.ones_like(w)),
            color=own,
            lw=1.6,
            label=est.name,
        )
    for axis in (forward, backward):
        _mark_thresholds(axis, bits, m)
        axis.set_xlabel("latent weight w")
        axis.legend(loc="upper left", fontsize=8)
    forward.plot(levels(bits, m), levels(bits, m), "o", color="black", ms=4)
    forward.set_title(f"forward: {bits}-bit Q, {2**bits} levels, Δ = {step_size(bits, m):.3g}")
    backward.set_title("backward: Q̂′(w) (dotted: rounding thresholds)")
    backward.set_ylabel("Q̂′(w)")
    return fig


def plot_weight_map(
    names: Sequence[str] = ("pwl", "dsq", "swish_sign"), bits: int = 2, m: float = 1.0
) -> Figure:
    """For each estimator: ``Q̂′`` and ``1/Q̂′`` (left) and the weight map ``M`` (right), α in the legend."""
    w = torch.linspace(-m, m, 1201, dtype=torch.float64)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for name in names:
        est = estimators.get(name)
        own = colour(ESTIMATORS, est.name)
        slope = est.derivative(w, bits, m)
        left.plot(w, slope, color=own, lw=1.6, label=f"Q̂′ {name}")
        left.plot(w, 1 / slope, color=own, lw=1.2, ls="--", label=f"1/Q̂′ {name}")
        right.plot(
            w,
            est.weight_map(w, bits, m),
            color=own,
            lw=1.6,
            label=f"M ({name}), α = {est.alpha(bits, m):.3f}",
        )
    right.plot(w, w, color=ESTIMATORS["ste"], lw=0.8, ls=":", label="identity (STE)")
    for axis in (left, right):
        _mark_thresholds(axis, bits, m)
        axis.set_xlabel("latent weight w")
        axis.legend(fontsize=7, loc="upper left")
    left.set_ylim(0, None)
    left.set_title(f"Q̂′ and 1/Q̂′ ({bits} bits)")
    right.set_title("weight map M: remaps initial weights for the STE run")
    return fig


def plot_scaling(etas, one_step, fixed_time, slopes: tuple[float, float]) -> Figure:
    """Log-log plot: one-step gap ∝ η² and fixed-time gap ∝ η, with the fitted slopes."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    for axis, gaps, slope, order, title in zip(
        fig.subplots(1, 2),
        (one_step, fixed_time),
        slopes,
        (2, 1),
        ("gap after one step", "gap at a fixed training time Tη"),
        strict=True,
    ):
        axis.loglog(
            etas, gaps, "o-", color=RUNS["adjusted"], label=f"measured, fitted slope {slope:.2f}"
        )
        reference = [gaps[0] * (e / etas[0]) ** order for e in etas]
        axis.loglog(etas, reference, "k:", label=f"slope {order} (theory)")
        axis.set_xlabel("learning rate η")
        axis.set_ylabel("max |M(w) − v|")
        axis.set_title(title)
        axis.legend(fontsize=8)
    return fig


def plot_trajectory_overlap(result, samples: int = 6) -> Figure:
    """Four panels of an equivalence experiment (``qatcore.estimators.equivalence.EquivalenceResult``):
    loss curves, agreement with the custom run over training, sampled weight paths in M-space,
    and where the second conv layer's quantized weights disagree at the end."""
    from qatcore.estimators.trajectory import agreement_over_training

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    (losses, agreement), (paths, heat) = fig.subplots(2, 2)
    for (
        name,
        run,
    ) in (
        result.runs.items()
    ):  # the custom run wide and beneath: runs that trace it leave it visible
        custom = name == "custom"
        losses.plot(
            run.losses,
            color=colour(RUNS, name),
            lw=3.0 if custom else 1.0,
            zorder=1 if custom else 2,
            label=name,
            alpha=0.9,
        )
    losses.set(title="loss curves", xlabel="step", ylabel="training loss (per batch)")
    losses.legend(fontsize=8)
    custom_levels = result.levels("custom")
    for name in result.agreements:
        agreement.plot(
            agreement_over_training(custom_levels, result.levels(name)).numpy(),
            color=colour(RUNS, name),
            label=f"{name} vs custom",
        )
    agreement.set(
        title="quantized weight agreement with the custom run", xlabel="step", ylabel="agreement"
    )
    agreement.legend(fontsize=8)
    if "adjusted" in result.runs:
        sgd_like = result.config.optimizer.name == "sgd"
        ste = result.runs["adjusted"].weights.double()
        movers = (
            (ste[1:] - ste[:-1]).abs().sum(dim=0).argsort(descending=True)[:samples]
        )  # the longest paths
        custom = result.runs["custom"].weights[:, movers].double()
        mapped = result.mapped_custom(columns=movers) if sgd_like else custom
        space = "M(w) of custom" if sgd_like else "custom"
        for i, column in enumerate(
            movers.tolist()
        ):  # each pair starts together: M(w₀) is the STE's start
            paths.plot(
                mapped[:, i].numpy(),
                color=RUNS["custom"],
                lw=1.6,
                label=space if i == 0 else None,
            )
            paths.plot(
                ste[:, column].numpy(),
                color=RUNS["adjusted"],
                lw=1.0,
                ls="--",
                label="adjusted" if i == 0 else None,
            )
        paths.set(
            title="the longest weight paths of the two runs", xlabel="step", ylabel="latent weight"
        )
        paths.legend(fontsize=8)
        conv = result.layer_slices[list(result.layer_slices)[-1]]
        differ = result.levels("custom")[-1, conv] != result.levels("adjusted")[-1, conv]
        shape = (64, differ.numel() // 64)
        image = heat.imshow(
            differ.reshape(shape).float().numpy(),
            aspect="auto",
            cmap="Greys",
            interpolation="nearest",
            vmin=0,
            vmax=1,
        )
        heat.set(
            title=f"last conv: levels that differ at the end ({int(differ.sum())} of {differ.numel()})",
            xlabel="input channel × kernel position",
            ylabel="output channel",
        )
        fig.colorbar(image, ax=heat, ticks=[0, 1])
    config = result.config
    fig.suptitle(
        f"{config.estimator} vs the adjusted STE — {config.bits} bits, {config.optimizer.label}, lr {config.optimizer.lr:g}"
    )
    return fig


def plot_agreement_vs_lr(etas, disagreement, slope: float, title: str = "") -> Figure:
    """Log-log: disagreement with the custom run at a fixed training time Tη, against η, with the fit."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    axis = fig.subplots()
    axis.loglog(
        etas,
        disagreement,
        "o-",
        color=RUNS["adjusted"],
        label=f"measured, fitted slope {slope:.2f}",
    )
    axis.set(
        xlabel="learning rate η (epochs × η fixed)",
        ylabel="1 − quantized weight agreement",
        title=title,
    )
    axis.legend(fontsize=8)
    return fig


class TwinRunsFigure:
    """The figure of ``plot_twin_runs``, made once and redrawn in place for each new pair of runs.

    Made for a live view that shows run after run: the axes, marks and legends are built once,
    and the layout found at the first drawing is kept, because the figure's texts keep their sizes
    from one run to the next. ``name`` is the custom estimator's, as the legend states it."""

    def __init__(self, name: str, bits: int, m: float, samples: int = 3) -> None:
        from matplotlib.lines import Line2D

        self.bits, self.m, self.samples = bits, m, samples
        self.figure = Figure(figsize=(10, 6.6), layout="constrained")
        self.paths, self.gaps = self.figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        paths, gaps = self.paths, self.gaps
        for level in levels(bits, m):
            paths.axhline(float(level), color="grey", lw=1.0, alpha=0.6)
        for t in thresholds(bits, m):
            paths.axhline(float(t), color="grey", lw=0.8, ls=":")
        custom, twin, ablation = RUNS["custom"], RUNS["adjusted"], RUNS["ablation"]
        styles: tuple[dict[str, Any], ...] = (
            dict(color=custom, lw=0.8, ls=(0, (1, 1.5))),  # w_t
            dict(color=custom, lw=3.0, alpha=0.45),  # M(w_t)
            dict(color=twin, lw=1.1, ls="--"),  # v_t
        )
        #: per sampled weight: its lines w_t, M(w_t) and v_t
        self.weights = [
            [paths.plot([], [], **style)[0] for style in styles] for _ in range(samples)
        ]
        key = [
            Line2D([], [], **styles[1], label=f"M(w_t): the {name} weight, mapped"),
            Line2D([], [], **styles[2], label="v_t: its STE twin (start M(w₀), rate αη)"),
            Line2D([], [], **styles[0], label=f"w_t: the {name} weight itself"),
            Line2D([], [], color="grey", lw=1.0, alpha=0.6, label="levels"),
            Line2D([], [], color="grey", lw=0.8, ls=":", label="thresholds"),
        ]
        paths.legend(handles=key, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        paths.set(
            ylabel="weight: w, or v = M(w)",
            ylim=(-1.08 * m, 1.08 * m),
            title=f"the {samples} weights that travel furthest:\nwhere the thick M(w_t) hides under "
            "the dashed v_t, the runs agree",
        )
        gaps.set_yscale("log")
        self.twin_gap = gaps.plot(
            [], [], color=twin, lw=1.4, label="remapped twin:\nmax |M(w_t) − v_t|"
        )[0]
        self.unadjusted_gap = gaps.plot(
            [],
            [],
            color=ablation,
            lw=1.4,
            label="unadjusted STE\n(start w₀, rate η):\nmax |w_t − v_t|",
        )[0]
        gaps.axhline(step_size(bits, m), color="grey", lw=0.8, ls="--", label="one bin, Δ")
        gaps.set(
            xlabel="training time ηt (step t × learning rate η)",
            ylabel="gap, largest over the weights",
        )
        gaps.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        # the gaps span several decades: a tick a decade reads them, and the minor ticks would be a
        # quarter of the figure's drawing time in a widget that redraws it as the reader moves η
        gaps.yaxis.set_minor_locator(NullLocator())
        self.title = self.figure.suptitle("")
        self._first_drawing = self.figure.canvas.mpl_connect("draw_event", self._keep_layout)

    def _keep_layout(self, _event) -> None:
        """After the first drawing, which laid the figure out, draw with that layout."""
        self.figure.set_layout_engine("none")
        self.figure.canvas.mpl_disconnect(self._first_drawing)

    def show(self, pair, unadjusted, estimator: estimators.Estimator) -> Figure:
        """The figure, redrawn for ``pair`` and ``unadjusted`` (as ``plot_twin_runs``)."""
        fig, bits, m = self.figure, self.bits, self.m
        # NumPy arrays: matplotlib reads a tensor given to set_data element by element
        time = np.arange(len(pair.gap)) * pair.eta
        mapped = estimator.weight_map(pair.custom, bits, m)
        travel = (pair.ste - pair.ste[0]).abs().amax(dim=0)
        furthest = travel.argsort(descending=True)[: self.samples].tolist()
        for lines, column in zip(self.weights, furthest, strict=False):
            for line, run in zip(lines, (pair.custom, mapped, pair.ste), strict=True):
                line.set_data(time, run[:, column].numpy())
        self.twin_gap.set_data(time, pair.gap.numpy())
        self.unadjusted_gap.set_data(time, unadjusted.gap.numpy())
        for axes in (self.paths, self.gaps):
            axes.relim()
            axes.autoscale_view()
        self.gaps.set_title(
            f"largest gap: {pair.max_gap:.1e} to the remapped twin, {unadjusted.max_gap:.1e} to "
            f"the unadjusted STE\n(one bin: Δ = {step_size(bits, m):.3g})"
        )
        settings = "".join(
            f", {name} {value:g}" for name, value in estimator.parameter_values(bits).items()
        )
        self.title.set_text(  # the same Text: the layout placed it at the first drawing
            f"{estimator.name} ({bits} bits{settings}) at η = {pair.eta:.2g} is an STE at "
            f"αη = {pair.alpha * pair.eta:.2g} (α = {pair.alpha:.3f}) in the coordinates v = M(w)"
        )
        return fig


def plot_twin_runs(
    pair, unadjusted, estimator: estimators.Estimator, bits: int, m: float, samples: int = 3
) -> Figure:
    """A custom-estimator run and its STE twin (``qatcore.estimators.quadratic.PairedRun``) against
    training time ``ηt``. Above, for the ``samples`` weights that travel furthest: the custom run's
    ``w_t`` and ``M(w_t)``, and the twin's ``v_t``, over the levels and thresholds. Below, the largest
    gap ``|M(w_t) − v_t|`` beside that of the ``unadjusted`` STE run (from ``w₀``, rate ``η``)."""
    return TwinRunsFigure(estimator.name, bits, m, samples).show(pair, unadjusted, estimator)
