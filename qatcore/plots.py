"""Figure functions for the course: each returns a matplotlib Figure and never shows it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from qatcore import estimators
from qatcore.quantizers import levels, step_size, thresholds, uniform_quantize


def surrogate(estimator: estimators.Estimator, w: torch.Tensor, bits: int, m: float) -> torch.Tensor:
    """``Q̂(w) = -m + ∫_{-m}^{w} Q̂′``: the smooth function whose slope the estimator uses
    (trapezoid rule on the sorted grid ``w``)."""
    slope = estimator.derivative(w, bits, m, grad_sign=torch.ones_like(w))
    steps = torch.diff(w) * (slope[1:] + slope[:-1]) / 2
    inside = torch.cat([torch.zeros(1, dtype=w.dtype), torch.cumsum(steps, 0)])
    start = int(torch.searchsorted(w, torch.tensor(-m, dtype=w.dtype)))
    return -m + inside - inside[min(start, len(w) - 1)]


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
        forward.plot(w, surrogate(est, w, bits, m), lw=1.4, label=f"Q̂ ({est.name})")
        backward.plot(w, est.derivative(w, bits, m, grad_sign=torch.ones_like(w)), lw=1.6, label=est.name)
    for axis in (forward, backward):
        for t in thresholds(bits, m):
            axis.axvline(float(t), color="grey", lw=0.6, ls=":")
        axis.set_xlabel("latent weight w")
        axis.legend(loc="upper left", fontsize=8)
    forward.plot(levels(bits, m), levels(bits, m), "o", color="black", ms=4)
    forward.set_title(f"forward: {bits}-bit Q, {2**bits} levels, Δ = {step_size(bits, m):.3g}")
    backward.set_title("backward: Q̂′(w) (dotted: rounding thresholds)")
    backward.set_ylabel("Q̂′(w)")
    return fig


def plot_weight_map(names: Sequence[str] = ("pwl", "dsq", "swish_sign"), bits: int = 2, m: float = 1.0) -> Figure:
    """For each estimator: ``Q̂′`` and ``1/Q̂′`` (left) and the weight map ``M`` (right), α in the legend."""
    w = torch.linspace(-m, m, 1201, dtype=torch.float64)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for index, name in enumerate(names):
        est = estimators.get(name)
        colour = f"C{index}"
        slope = est.derivative(w, bits, m)
        left.plot(w, slope, color=colour, lw=1.6, label=f"Q̂′ {name}")
        left.plot(w, 1 / slope, color=colour, lw=1.2, ls="--", label=f"1/Q̂′ {name}")
        right.plot(w, est.weight_map(w, bits, m), color=colour, lw=1.6,
                   label=f"M ({name}), α = {est.alpha(bits, m):.3f}")
    right.plot(w, w, color="black", lw=0.8, ls=":", label="identity (STE)")
    for axis in (left, right):
        for t in thresholds(bits, m):
            axis.axvline(float(t), color="grey", lw=0.6, ls=":")
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
        fig.subplots(1, 2), (one_step, fixed_time), slopes, (2, 1),
        ("gap after one step", "gap at a fixed training time Tη"), strict=True,
    ):
        axis.loglog(etas, gaps, "o-", label=f"measured, fitted slope {slope:.2f}")
        reference = [gaps[0] * (e / etas[0]) ** order for e in etas]
        axis.loglog(etas, reference, "k:", label=f"slope {order} (theory)")
        axis.set_xlabel("learning rate η")
        axis.set_ylabel("max |M(w) − u|")
        axis.set_title(title)
        axis.legend(fontsize=8)
    return fig
