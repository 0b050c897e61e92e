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
