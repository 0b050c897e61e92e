"""The symbolic argument of "custom estimators are STEs in disguise", each step with a verdict.

Every function returns the expressions it derived and ``Verdict``s that were computed: by
``sympy.simplify`` to 0 where sympy can, else numerically at many points (``how`` says which).
Nothing here asserts; notebooks and tests assert the verdicts.

The argument (REFERENCE §1): for ``Q̂′`` bounded below by ``L₋ > 0``, Lipschitz with constant
``L`` and of the same shape in every bin, put ``v = M(w)`` with ``M′ = α/Q̂′``. One SGD step
``w ← w − η g Q̂′(w)`` moves ``v`` by ``−αηg`` plus a remainder ``½ M″(ξ)(ηgQ̂′)²`` whose size is
at most ``½ α L (L₊/L₋)² g² η²``. So the custom-estimator run is an STE run with rate ``αη`` and
initial weights ``M(w₀)``, up to ``O(η²)`` per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp
import torch

from qatcore.estimators import (
    COMPLEX_NUMPY,
    DELTA,
    GRAD_SIGN,
    M_RANGE,
    Estimator,
    u,
    without_reciprocal_hyperbolics,
)
from qatcore.quantizers import levels, step_size, thresholds, uniform_quantize

c = sp.Symbol("c", real=True)  # the bin's centre (rounding threshold)
eta = sp.Symbol("eta", positive=True)  # learning rate
g = sp.Symbol("g", real=True)  # loss gradient with respect to the quantized weight
alpha = sp.Symbol("alpha", positive=True)


@dataclass(frozen=True)
class Verdict:
    """One checked statement: whether it holds, how it was checked, and the evidence."""

    name: str
    holds: bool
    how: str  # "symbolic", "numeric" or "follows from …"
    detail: str = ""

    def __str__(self) -> str:
        mark = "✔" if self.holds else "✘"
        return f"{mark} {self.name} [{self.how}]" + (f": {self.detail}" if self.detail else "")


@dataclass
class Verdicts:
    """A list of verdicts with the derived expressions they speak about."""

    verdicts: list[Verdict] = field(default_factory=list)
    expressions: dict[str, sp.Expr] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return all(v.holds for v in self.verdicts)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.holds]

    def __str__(self) -> str:
        return "\n".join(map(str, self.verdicts))


def _parameter_substitution(est: Estimator, bits: int, m: float) -> dict[sp.Symbol, float]:
    values = est.parameter_values(bits)
    subs = {p.symbol: values[p.name] for p in est.definition.parameters}
    return {**subs, DELTA: step_size(bits, m), M_RANGE: m}


def is_zero(expr: sp.Expr, est: Estimator, name: str, points: int = 40) -> Verdict:
    """``expr == 0``: by ``simplify`` if it can, else numerically on a grid of ``u`` within a bin
    at the bit widths 1, 2 and 4 (absolute tolerance 1e-9), off the bin's centre where a
    piecewise Q̂′ may have a kink."""
    if sp.simplify(expr) == 0:
        return Verdict(name, True, "symbolic", "simplifies to 0")
    worst = 0.0
    values = np.linspace(-0.499, 0.499, points)  # even count: u = 0 (a kink) is skipped
    for bits in (1, 2, 4):
        subs = {**_parameter_substitution(est, bits, 1.0), c: 0.3, g: 0.7, eta: 0.0}
        numeric = sp.lambdify(
            u, without_reciprocal_hyperbolics(expr.subs(subs)), modules=COMPLEX_NUMPY
        )
        difference = np.broadcast_to(numeric(values * float(subs[DELTA])), values.shape)
        worst = max(worst, float(np.max(np.abs(difference))))
    return Verdict(name, worst < 1e-9, "numeric", f"max |difference| {worst:.1e} over 1, 2, 4 bits")


# --- assumptions -----------------------------------------------------------------------------


def check_assumptions(
    est: Estimator, bits: int = 2, m: float = 1.0, points: int = 4001
) -> Verdicts:
    """The theory's assumptions on ``Q̂′`` for this estimator, each with its evidence.

    One fixed ``Q̂′`` (not a function of the incoming gradient); same shape in every bin;
    bounded ``0 < L₋ ≤ Q̂′ ≤ L₊``; Lipschitz; symmetric about the threshold (so ``M`` fixes the
    levels as well as the thresholds, which is what ``Q(M(w)) = Q(w)`` needs).
    """
    out = Verdicts()
    fixed = not est.depends_on_gradient_sign
    out.verdicts.append(
        Verdict(
            "one fixed Q̂′(w)",
            fixed,
            "symbolic",
            ""
            if fixed
            else f"Q̂′ contains the gradient's sign {GRAD_SIGN}: its backward depends on it",
        )
    )
    delta = step_size(bits, m)
    # random points (seeded): a jump exactly at a threshold is not hit by accident
    rng = torch.Generator().manual_seed(0)
    grid = -m + (2 * m - delta) * torch.rand(points, generator=rng, dtype=torch.float64)
    ones = torch.ones_like(grid)
    same = torch.allclose(
        est.derivative(grid, bits, m, ones), est.derivative(grid + delta, bits, m, ones)
    )
    out.verdicts.append(
        Verdict(
            "same shape in every bin",
            bool(same),
            "numeric",
            f"Q̂′(w) = Q̂′(w + Δ) at {points} points",
        )
    )
    centre = float(thresholds(bits, m)[len(thresholds(bits, m)) // 2])
    within = torch.linspace(-delta / 2, delta / 2, points, dtype=torch.float64)
    values = est.derivative(centre + within, bits, m, torch.ones_like(within))
    low, high = float(values.min()), float(values.max())
    out.verdicts.append(
        Verdict(
            "bounded below, L₋ > 0",
            low > 1e-12 * high,
            "numeric",
            f"L₋ = {low:.4g}"
            + ("" if low > 1e-12 * high else " — 1/Q̂′ is not integrable over a bin"),
        )
    )
    out.verdicts.append(
        Verdict("bounded above, L₊ < ∞", bool(np.isfinite(high)), "numeric", f"L₊ = {high:.4g}")
    )
    # Lipschitz: the steepest difference quotient across a bin edge and a threshold, at two
    # resolutions; a jump shows as a quotient that doubles when the grid is refined.
    quotients = []
    for n in (points, 2 * points):
        across = centre + torch.linspace(-0.75 * delta, 0.75 * delta, n, dtype=torch.float64)
        slope = torch.diff(est.derivative(across, bits, m, torch.ones_like(across))) / torch.diff(
            across
        )
        quotients.append(float(slope.abs().max()))
    lipschitz = quotients[1]
    continuous = quotients[1] < 1.5 * quotients[0] + 1e-12
    out.verdicts.append(
        Verdict(
            "Lipschitz",
            continuous,
            "numeric",
            f"L = max|ΔQ̂′/Δw| ≈ {lipschitz:.4g}"
            if continuous
            else "Q̂′ jumps: difference quotients grow as the grid is refined",
        )
    )
    mirrored = est.derivative(centre - within, bits, m, torch.ones_like(within))
    symmetric = bool(torch.allclose(values, mirrored, rtol=1e-12, atol=1e-12))
    out.verdicts.append(
        Verdict("symmetric about the threshold", symmetric, "numeric", "Q̂′(c + u) = Q̂′(c − u)")
    )
    out.expressions.update(
        {"L_minus": sp.Float(low), "L_plus": sp.Float(high), "L": sp.Float(lipschitz)}
    )
    return out


def _refuse_unless_assumptions_hold(est: Estimator, bits: int, m: float) -> Verdicts:
    assumptions = check_assumptions(est, bits, m)
    if not assumptions.holds:
        reasons = "; ".join(f"{v.name} fails ({v.detail})" for v in assumptions.failed)
        raise ValueError(
            f"the STE-equivalence theory does not cover estimator {est.name!r}: {reasons}"
        )
    return assumptions


# --- the weight map -------------------------------------------------------------------------


def weight_map_derivation(est: Estimator, bits: int = 2, m: float = 1.0) -> Verdicts:
    """``α`` and ``M`` for ``est``, and the checks ``M′ = α/Q̂′``, centre and edges fixed, ``M``
    monotone, ``Q∘M = Q``. Raises ValueError naming the failed assumption when there is no map."""
    assumptions = _refuse_unless_assumptions_hold(est, bits, m)
    out = Verdicts()
    q = est.symbolic_derivative
    F = est.symbolic_inverse_integral
    alpha_value = est.alpha(bits, m)
    out.expressions["Qhat_prime"] = q
    if F is not None:
        alpha_expr = DELTA / (F.subs(u, DELTA / 2) - F.subs(u, -DELTA / 2))
        mapped = c + alpha_expr * F
        out.expressions.update({"inverse_integral": F, "alpha": alpha_expr, "M": mapped})
        out.verdicts.append(is_zero(sp.diff(mapped, u) - alpha_expr / q, est, "M′ = α/Q̂′"))
        out.verdicts.append(
            is_zero(mapped.subs(u, 0) - c, est, "M fixes the threshold c (bin centre)")
        )
        out.verdicts.append(
            is_zero(
                mapped.subs(u, DELTA / 2) - (c + DELTA / 2), est, "M fixes the upper level c + Δ/2"
            )
        )
        out.verdicts.append(
            is_zero(
                mapped.subs(u, -DELTA / 2) - (c - DELTA / 2), est, "M fixes the lower level c − Δ/2"
            )
        )
        numeric_alpha = float(alpha_expr.subs(_parameter_substitution(est, bits, m)).evalf())
        out.verdicts.append(
            Verdict(
                "α from the closed form equals the estimator's α",
                abs(numeric_alpha - alpha_value) < 1e-9 * alpha_value,
                "numeric",
                f"α = {alpha_value:.6f}",
            )
        )
    else:
        w = torch.cat([levels(bits, m), thresholds(bits, m)])
        fixed = torch.allclose(est.weight_map(w, bits, m), w, atol=1e-12)
        out.verdicts.append(
            Verdict(
                "M fixes every threshold and level",
                bool(fixed),
                "numeric",
                f"{est.map_method}, α = {alpha_value:.6f}",
            )
        )
    lower = float(assumptions.expressions["L_minus"])
    out.verdicts.append(
        Verdict(
            "M is monotone", alpha_value > 0 and lower > 0, "follows from M′ = α/Q̂′ ≥ α/L₊ > 0", ""
        )
    )
    w = torch.linspace(-1.2 * m, 1.2 * m, 20001, dtype=torch.float64)
    w = w[
        (w[:, None] - thresholds(bits, m)[None]).abs().min(dim=1).values > 1e-9 * step_size(bits, m)
    ]
    keeps = torch.equal(
        uniform_quantize(est.weight_map(w, bits, m), bits, m), uniform_quantize(w, bits, m)
    )
    out.verdicts.append(
        Verdict("Q(M(w)) = Q(w)", keeps, "numeric", f"{len(w)} points off the thresholds")
    )
    out.expressions["alpha_value"] = sp.Float(alpha_value)
    return out


# --- one SGD step ---------------------------------------------------------------------------


#: The derivation's weight map: ``M′`` as a function of ``q = Q̂′`` (the theorem's ``α/q``). The
#: checks below take it as an argument, so a broken map (say ``1/q``, α dropped) visibly fails them.
def theorem_map_derivative(q: sp.Expr) -> sp.Expr:
    """The theorem's ``M′ = α/Q̂′``."""
    return alpha / q


def _expand_map(argument: sp.Expr, w: sp.Symbol, map_derivative, order: int = 2) -> sp.Expr:
    """``M(argument)`` expanded by sympy in ``η`` to ``order``, ``M′`` and ``M″`` then replaced using
    ``M′ = map_derivative(q(w))`` (``q`` an unknown function): nothing of the result is typed in."""
    M = sp.Function("M")
    series = sp.series(M(argument), eta, 0, order + 1).removeO().doit()
    first = map_derivative(sp.Function("q")(w))
    replaced = series.subs(sp.Derivative(M(w), (w, 2)), sp.diff(first, w)).subs(
        sp.Derivative(M(w), w), first
    )
    return sp.expand(replaced)


def sgd_step_expansion(
    est: Estimator | None = None,
    bits: int = 2,
    m: float = 1.0,
    map_derivative=theorem_map_derivative,
) -> Verdicts:
    """Expand ``M(w − ηgQ̂′(w))`` in ``η`` and check it is ``M(w) − αηg − ½αg²Q̂″(w)η² + O(η³)``.

    With ``est=None`` the derivation is general: sympy Taylor-expands ``M`` around ``w`` for an
    unknown positive ``q = Q̂′`` and substitutes ``M′ = map_derivative(q)`` (the theorem's ``α/q``).
    With an estimator it is redone on that estimator's closed-form ``M``.
    ``expressions["bound"]`` bounds the exact remainder ``½M″(ξ)(ηgQ̂′)²`` by
    ``½ α L (L₊/L₋)² g² η²``.
    """
    out = Verdicts()
    L, Lm, Lp = sp.symbols("L L_minus L_plus", positive=True)
    out.expressions["bound"] = sp.Rational(1, 2) * alpha * L * (Lp / Lm) ** 2 * g**2 * eta**2
    if est is None:
        w = sp.Symbol("w", real=True)
        q = sp.Function("q")(w)
        expanded = _expand_map(w - eta * g * q, w, map_derivative)
        first, second = expanded.coeff(eta, 1), expanded.coeff(eta, 2)
        out.expressions.update({"eta1": first, "eta2": second})
        ok1 = sp.simplify(first + alpha * g) == 0
        ok2 = sp.simplify(second + alpha * g**2 * sp.diff(q, w) / 2) == 0
        out.verdicts.append(
            Verdict(
                "coefficient of η is −αg: an STE step of rate αη",
                ok1,
                "symbolic",
                "sympy series of M(w − ηgq(w)), M′ = α/q substituted",
            )
        )
        out.verdicts.append(
            Verdict("coefficient of η² is −½αg²q′(w)", ok2, "symbolic", "M″ = (α/q)′ substituted")
        )
        return out
    mapping = weight_map_derivation(est, bits, m)
    if "M" not in mapping.expressions:
        raise ValueError(
            f"{est.name}: no closed-form M ({est.map_method}); use est=None for the general expansion"
        )
    M = mapping.expressions["M"]
    a = mapping.expressions["alpha"]
    q = est.symbolic_derivative
    moved = M.subs(u, u - eta * g * q)
    first = sp.diff(moved, eta).subs(eta, 0)
    second = sp.diff(moved, eta, 2).subs(eta, 0) / 2
    out.expressions.update({"eta1": first, "eta2": second, "alpha": a})
    out.verdicts.append(is_zero(first + a * g, est, "coefficient of η is −αg"))
    out.verdicts.append(
        is_zero(second + a * g**2 * sp.diff(q, u) / 2, est, "coefficient of η² is −½αg²Q̂″")
    )
    assumptions = check_assumptions(est, bits, m)
    values = {
        L: assumptions.expressions["L"],
        Lm: assumptions.expressions["L_minus"],
        Lp: assumptions.expressions["L_plus"],
        alpha: est.alpha(bits, m),
    }
    out.expressions["bound_value"] = out.expressions["bound"].subs(values)
    return out


def momentum_argument(window: int = 4, map_derivative=theorem_map_derivative) -> Verdicts:
    """Heavy-ball momentum: the ``v = M(w)`` step is the STE's momentum step of rate ``αη`` up to
    ``O(η²)``, and the drift of ``Q̂′`` over the averaging window enters only at ``η²``.

    The velocity sums the past estimated gradients ``Σ_k λ^k g_k Q̂′(w_{t−k})``, ``λ`` the momentum
    coefficient, taken at earlier weights ``w_{t−k} = w_t + η d_k`` (``d_k`` the drift back to step
    ``t−k``, per unit ``η``). sympy expands ``M(w − η·velocity) − M(w)`` in ``η`` (``Q̂′``, the sympy
    function ``q``, expanded around ``w_t`` too) with ``M′ = map_derivative(q)``. Checked: the ``η`` coefficient is ``−α Σ λ^k g_k`` (no drift in it);
    the drift part of the ``η²`` coefficient, for a steady drift ``d_k = kD`` and gradient ``G``, is
    ``−α(Q̂″/Q̂′)GD Σ k λ^k``, and that sum stays finite over an unbounded window, ``λ/(1−λ)²``.
    """
    out = Verdicts()
    w = sp.Symbol("w", real=True)
    lam, drift, grad = (
        sp.Symbol("lambda", positive=True),  # the momentum coefficient λ
        sp.Symbol("D", real=True),
        sp.Symbol("G", real=True),
    )
    q = sp.Function("q")
    gs = sp.symbols(f"g_0:{window}", real=True)
    ds = sp.symbols(f"d_0:{window}", real=True)
    velocity = sum(lam**k * gs[k] * q(w + eta * ds[k]) for k in range(window))
    du = _expand_map(w - eta * velocity, w, map_derivative) - sp.Function("M")(w)
    first, second = du.coeff(eta, 1), du.coeff(eta, 2)
    ste_step = -alpha * sum(lam**k * gs[k] for k in range(window))
    out.expressions.update({"eta1": first, "eta2": second, "ste_step": ste_step})
    out.verdicts.append(
        Verdict(
            "η coefficient of the v-step is the STE momentum step with rate αη",
            sp.simplify(first - ste_step) == 0,
            "symbolic",
            f"sympy series, window of {window} past gradients at drifted weights",
        )
    )
    steady = {**{gs[k]: grad for k in range(window)}, **{ds[k]: k * drift for k in range(window)}}
    drift_part = sp.diff(second.subs(steady), drift)
    k = sp.Symbol("k", integer=True, nonnegative=True)
    expected = -alpha * sp.diff(q(w), w) / q(w) * grad * sum(j * lam**j for j in range(window))
    weight = sp.summation(k * lam**k, (k, 0, sp.oo))
    if isinstance(weight, sp.Piecewise):  # (λ/(1−λ)², |λ| < 1), (divergent sum, otherwise)
        weight = weight.args[0][0]
    out.expressions.update({"drift_part": drift_part, "drift_weight": weight})
    out.verdicts.append(
        Verdict(
            "the drift of Q̂′ over the window enters at η² as −α(Q̂″/Q̂′)GD·Σkλ^k",
            sp.simplify(drift_part - expected) == 0,
            "symbolic",
            "η² coefficient of the same series, steady drift d_k = kD",
        )
    )
    out.verdicts.append(
        Verdict(
            "…and Σkλ^k over an unbounded window is finite, λ/(1−λ)²: the drift adds only O(η²)",
            sp.simplify(weight - lam / (1 - lam) ** 2) == 0,
            "symbolic",
            "sympy summation, |λ| < 1",
        )
    )
    return out


def no_map(q: sp.Expr) -> sp.Expr:
    """Adam's map: none, ``M′ = 1`` (the theorem needs no remapping and no rate factor for Adam)."""
    return sp.Integer(1)


def adam_scale_invariance(steps: int = 3, map_derivative=no_map) -> Verdicts:
    """Adam's step with the estimate ``c·g`` (``c = Q̂′`` constant over the window), seen through
    ``M′ = map_derivative(c)``, is the STE's Adam step ``−η m̂/√v̂`` of the same ``η`` (``ε → 0``).

    With the theorem's ``M′ = 1`` it is, because ``m̂/√v̂`` cancels the factor ``c``; a map from the
    SGD recipe (``α/c``) or any other ``M′ ≠ 1`` breaks the equality.
    """
    out = Verdicts()
    b1, b2, scale = sp.symbols("beta_1 beta_2 c", positive=True)
    gs = sp.symbols(f"g_1:{steps + 1}", positive=True)

    def direction(factor):
        m_ = sum((1 - b1) * b1 ** (steps - 1 - i) * factor * gs[i] for i in range(steps)) / (
            1 - b1**steps
        )
        v_ = sum((1 - b2) * b2 ** (steps - 1 - i) * (factor * gs[i]) ** 2 for i in range(steps)) / (
            1 - b2**steps
        )
        return m_ / sp.sqrt(v_)

    custom, plain = map_derivative(scale) * direction(scale), direction(1)
    out.expressions.update({"update_custom": custom, "update": plain})
    out.verdicts.append(
        Verdict(
            "the custom Adam step, mapped, is the STE's Adam step of the same η",
            sp.simplify(custom - plain) == 0,
            "symbolic",
            f"{steps} steps, gradients and the factor c = Q̂′ symbolic",
        )
    )
    return out
