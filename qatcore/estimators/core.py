"""Gradient estimators, each defined once as a sympy expression of its derivative within one bin.

A custom estimator replaces the zero derivative of the quantizer ``Q`` in the backward pass by
``Q̂′(w)``. Here ``Q̂′`` is written once, as a sympy expression in ``u = w - c``, the offset from
the rounding threshold ``c`` at the centre of the bin holding ``w`` (``u ∈ [-Δ/2, Δ/2]``), the
step ``Δ``, the range ``m`` and the estimator's own parameters. The estimator repeats that shape in
every bin of ``[-m, m]`` and is 0 outside (the clip). Everything else is derived from that one
expression:

* the torch backward, by ``sympy.lambdify``;
* the learning-rate factor ``α = Δ / ∫_bin du / Q̂′(u)`` (the harmonic mean of ``Q̂′`` over a bin);
* the weight map ``M(w) = c + α ∫_0^u ds / Q̂′(s)``, which fixes every threshold ``c`` and, for an
  estimator symmetric about ``c``, every level; so ``Q(M(w)) = Q(w)``.

``∫ 1/Q̂′`` is taken in closed form when sympy finds one and by Gauss–Legendre quadrature
otherwise; ``Estimator.map_method`` says which.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
import torch

from qatcore.quantizers import (
    bin_centre,
    bin_index,
    check_bits,
    check_range,
    quantize_values,
    sign,
    step_size,
)

# The symbols every definition is written in.
u = sp.Symbol("u", real=True)  # offset from the bin's centre (its rounding threshold)
DELTA = sp.Symbol("Delta", positive=True)  # step between levels
M_RANGE = sp.Symbol("m", positive=True)  # quantizer range [-m, m]
GRAD_SIGN = sp.Symbol("sigma", real=True)  # sign of the incoming gradient (EWGS only)
_s = sp.Symbol("s", real=True)  # integration variable

CLOSED_FORM = "closed form"
QUADRATURE = "numeric quadrature"
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(64)


@dataclass(frozen=True)
class Parameter:
    """A named, checked parameter of an estimator.

    ``default`` is a number, or a function of the bit width for estimators whose authors tuned it
    per bit width. ``lower``/``upper`` bound the allowed values (``lower_open``: ``> lower``).
    """

    name: str
    doc: str
    default: float | Callable[[int], float]
    lower: float = 0.0
    upper: float = math.inf
    lower_open: bool = True
    upper_open: bool = False

    @property
    def symbol(self) -> sp.Symbol:
        if self.lower >= 0:
            return sp.Symbol(self.name, **{"positive" if self.lower_open else "nonnegative": True})
        return sp.Symbol(self.name, real=True)

    def check(self, value: object) -> float:
        bad = isinstance(value, bool) or not isinstance(value, numbers.Real)
        if not bad:
            value = float(value)
            low_ok = value > self.lower if self.lower_open else value >= self.lower
            high_ok = value < self.upper if self.upper_open else value <= self.upper
            bad = not (math.isfinite(value) and low_ok and high_ok)
        if bad:
            low = f"> {self.lower:g}" if self.lower_open else f">= {self.lower:g}"
            high = (
                ""
                if math.isinf(self.upper)
                else f" and {'<' if self.upper_open else '<='} {self.upper:g}"
            )
            raise ValueError(f"{self.name} must be a number {low}{high}, got {value!r}")
        return value


@dataclass(frozen=True)
class Definition:
    """One estimator: its derivative within a bin, as a sympy expression, and what it claims.

    ``outside_theory`` is ``None`` for an estimator the STE-equivalence theory may cover, or the
    reason it cannot (checked again numerically by ``Estimator.check_weight_map``).
    """

    name: str
    title: str
    derivative: sp.Expr
    parameters: tuple[Parameter, ...] = ()
    integrates_to_delta: bool = True
    outside_theory: str | None = None

    @functools.cached_property
    def depends_on_gradient_sign(self) -> bool:
        return GRAD_SIGN in self.derivative.free_symbols

    @property
    def arguments(self) -> tuple[sp.Symbol, ...]:
        """The lambdified functions' arguments, in order."""
        extra = (GRAD_SIGN,) if self.depends_on_gradient_sign else ()
        return (u, DELTA, M_RANGE, *(p.symbol for p in self.parameters), *extra)


def without_reciprocal_hyperbolics(expr: sp.Expr) -> sp.Expr:
    """sech, csch, coth as cosh/sinh: the torch and numpy printers know only the latter."""
    return (
        expr.replace(sp.sech, lambda a: 1 / sp.cosh(a))
        .replace(sp.csch, lambda a: 1 / sp.sinh(a))
        .replace(sp.coth, lambda a: sp.cosh(a) / sp.sinh(a))
    )


def _complex_log(x):
    return np.log(np.asarray(x, dtype=complex))


def _complex_sqrt(x):
    return np.sqrt(np.asarray(x, dtype=complex))


#: lambdify modules that take logs and roots of negative numbers on the complex plane: sympy's
#: closed forms may hold log(negative) terms whose imaginary parts cancel.
COMPLEX_NUMPY = [{"log": _complex_log, "sqrt": _complex_sqrt}, "numpy"]


@dataclass(frozen=True)
class Derivation:
    """What sympy derives, once per definition: ``F(u) = ∫_0^u ds/Q̂′(s)`` and numeric functions."""

    inverse_integral: sp.Expr | None  # None: no closed form, quadrature is used
    derivative_torch: Callable = field(repr=False)
    derivative_numpy: Callable = field(repr=False)
    inverse_integral_numpy: Callable | None = field(repr=False)


@functools.cache
def derive(definition: Definition) -> Derivation:
    """Integrate ``1/Q̂′`` with sympy and lambdify everything a numeric caller needs (cached)."""
    args = definition.arguments
    expr = without_reciprocal_hyperbolics(definition.derivative)
    derivative_torch = sp.lambdify(args, expr, modules="torch")
    derivative_numpy = sp.lambdify(args, expr, modules="numpy")
    inverse_integral, inverse_integral_numpy = None, None
    if not definition.depends_on_gradient_sign:
        integral = sp.integrate(1 / definition.derivative.subs(u, _s), (_s, 0, u))
        if not integral.has(sp.Integral):
            inverse_integral = integral
            inverse_integral_numpy = sp.lambdify(
                args,
                without_reciprocal_hyperbolics(integral),
                modules=COMPLEX_NUMPY,
            )
    return Derivation(inverse_integral, derivative_torch, derivative_numpy, inverse_integral_numpy)


class Estimator:
    """A definition with its parameter values: derivative, quantize-with-backward, α and M."""

    def __init__(self, definition: Definition, **params: float | None) -> None:
        known = {p.name for p in definition.parameters}
        unknown = sorted(set(params) - known)
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} for estimator {definition.name!r}; "
                f"allowed: {allowed}"
            )
        self.definition = definition
        self.params: dict[str, float | None] = {}
        for p in definition.parameters:
            value = params.get(p.name)
            self.params[p.name] = None if value is None else p.check(value)
        self._bound: dict[tuple[int, float], BoundEstimator] = {}

    def bind(self, bits: int, m: float) -> BoundEstimator:
        """This estimator at ``bits`` bits on ``[-m, m]``, checked and compiled once (cached): what a
        layer calls every step, with no per-call validation and no per-call constant tensors."""
        key = (bits, m)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = BoundEstimator(self, check_bits(bits), check_range(m))
        return bound

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def depends_on_gradient_sign(self) -> bool:
        return self.definition.depends_on_gradient_sign

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:g}" for k, v in self.params.items() if v is not None)
        return f"Estimator({self.name!r}{', ' + shown if shown else ''})"

    def parameter_values(self, bits: int) -> dict[str, float]:
        """Parameter values at this bit width (defaults filled in)."""
        bits = check_bits(bits)
        values = {}
        for p in self.definition.parameters:
            value = self.params[p.name]
            if value is None:
                value = p.default(bits) if callable(p.default) else p.default
            values[p.name] = float(value)
        return values

    # --- symbolic -------------------------------------------------------------------------
    @property
    def symbolic_derivative(self) -> sp.Expr:
        """``Q̂′(u)`` within one bin, in the symbols ``u``, ``Delta``, ``m`` and the parameters."""
        return self.definition.derivative

    @property
    def symbolic_inverse_integral(self) -> sp.Expr | None:
        """``∫_0^u ds/Q̂′(s)`` in closed form, or ``None`` where sympy finds none."""
        return derive(self.definition).inverse_integral

    @property
    def map_method(self) -> str:
        """How ``α`` and ``M`` are computed: ``"closed form"`` or ``"numeric quadrature"``."""
        return CLOSED_FORM if self.symbolic_inverse_integral is not None else QUADRATURE

    # --- numeric --------------------------------------------------------------------------
    def _numbers(self, bits: int, m: float) -> tuple[int, float, float, list[float]]:
        bits, m = check_bits(bits), check_range(m)
        return bits, m, step_size(bits, m), list(self.parameter_values(bits).values())

    def derivative(
        self, w: torch.Tensor, bits: int, m: float, grad_sign: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``Q̂′(w)``: the bin's shape inside ``[-m, m]``, 0 outside."""
        return self.bind(bits, m).derivative(w, grad_sign)

    def quantize(self, w: torch.Tensor, bits: int, m: float) -> torch.Tensor:
        """``Q(w)`` forward, ``Q̂′(w)·grad`` backward."""
        return self.bind(bits, m).quantize(w)

    def _bin_values(self, bits: int, m: float, points: int = 4097) -> tuple[np.ndarray, np.ndarray]:
        _, m, delta, params = self._numbers(bits, m)
        grid = np.linspace(-delta / 2, delta / 2, points)
        signs = [(1.0,), (-1.0,)] if self.depends_on_gradient_sign else [()]
        values = [
            np.broadcast_to(
                derive(self.definition).derivative_numpy(grid, delta, m, *params, *s), grid.shape
            )
            for s in signs
        ]
        return grid, np.stack(values)

    def bin_integral(self, bits: int, m: float) -> float:
        """``∫_bin Q̂′(u) du`` by Gauss–Legendre quadrature (Δ for a normalised estimator)."""
        _, m, delta, params = self._numbers(bits, m)
        if self.depends_on_gradient_sign:
            params = [*params, 1.0]
        half = delta / 2
        total = 0.0
        for lo in (-half, 0.0):  # split at the centre, where |u| has its kink
            nodes = lo + (_GAUSS_NODES + 1) * half / 2
            values = derive(self.definition).derivative_numpy(nodes, delta, m, *params)
            total += float(np.sum(_GAUSS_WEIGHTS * np.broadcast_to(values, nodes.shape)) * half / 2)
        return total

    def check_weight_map(self, bits: int, m: float) -> None:
        """Raise ValueError, saying why, when no weight map M exists for this estimator."""
        if self.depends_on_gradient_sign:
            raise ValueError(
                f"no weight map for estimator {self.name!r}: its backward depends on the sign of "
                "the incoming gradient, so it is not one fixed Q̂′(w) and the theory does not apply"
            )
        grid, values = self._bin_values(bits, m)
        worst = int(np.argmin(values[0]))
        lowest = float(values[0][worst])
        tolerance = 1e-15 * float(np.max(np.abs(values[0])))  # below this, Q̂′ is 0 in float64
        if not lowest > tolerance:
            where = grid[worst] / step_size(bits, m)
            what = "is negative" if lowest < -tolerance else "vanishes"
            raise ValueError(
                f"no weight map for estimator {self.name!r} at {bits} bits: the map needs Q̂′ > 0 "
                f"throughout each bin, but Q̂′ {what} ({lowest:.3g}) at u = {where:+.3f}·Δ, "
                "so ∫ du/Q̂′ is not finite there"
            )

    def _inverse_integral(self, u_values: np.ndarray, bits: int, m: float) -> np.ndarray:
        """``F(u) = ∫_0^u ds/Q̂′(s)`` in float64: closed form, else 64-point Gauss–Legendre."""
        _, m, delta, params = self._numbers(bits, m)
        derivation = derive(self.definition)
        if derivation.inverse_integral_numpy is not None:
            value = derivation.inverse_integral_numpy(u_values, delta, m, *params)
            return np.real(np.broadcast_to(value, u_values.shape)).astype(np.float64)
        nodes = u_values[..., None] * (_GAUSS_NODES + 1) / 2
        values = np.broadcast_to(derivation.derivative_numpy(nodes, delta, m, *params), nodes.shape)
        return u_values / 2 * np.sum(_GAUSS_WEIGHTS / values, axis=-1)

    def alpha(self, bits: int, m: float) -> float:
        """The learning-rate factor ``α = Δ / ∫_bin du/Q̂′(u)`` (harmonic mean of Q̂′ over a bin)."""
        self.check_weight_map(bits, m)
        delta = step_size(bits, m)
        ends = self._inverse_integral(np.array([-delta / 2, delta / 2]), bits, m)
        return float(delta / (ends[1] - ends[0]))

    def weight_map(self, w: torch.Tensor, bits: int, m: float) -> torch.Tensor:
        """``M(w) = c + α ∫_0^u ds/Q̂′(s)`` inside ``[-m, m]``, ``w`` outside; same dtype as ``w``."""
        alpha = self.alpha(bits, m)
        w64 = w.detach().to(torch.float64)
        inside = torch.abs(w64) <= m  # outside the range M is the identity: map only what is inside
        centre = bin_centre(bin_index(w64[inside], bits, m), bits, m)
        offset = (w64[inside] - centre).cpu().numpy()
        mapped = w64.clone()
        mapped[inside] = centre + alpha * torch.from_numpy(
            self._inverse_integral(offset, bits, m)
        ).to(w64.device)
        return mapped.to(dtype=w.dtype, device=w.device)


class BoundEstimator:
    """An estimator at one bit width and range. ``Δ``, ``m`` and the parameter values are
    substituted into ``Q̂′`` before ``lambdify``, so sympy folds the constants and the compiled
    function takes the offset ``u`` (and, for EWGS, the gradient's sign) alone."""

    def __init__(self, estimator: Estimator, bits: int, m: float) -> None:
        self.estimator, self.bits, self.m = estimator, bits, m
        self.delta = step_size(bits, m)
        self._top_bin = 2**bits - 2
        definition = estimator.definition
        values = {DELTA: self.delta, M_RANGE: m}
        values |= {
            p.symbol: v
            for p, v in zip(
                definition.parameters, estimator.parameter_values(bits).values(), strict=True
            )
        }
        expr = without_reciprocal_hyperbolics(definition.derivative).subs(values)
        args = (u, GRAD_SIGN) if definition.depends_on_gradient_sign else (u,)
        self._torch = sp.lambdify(args, expr, modules="torch")
        self._numpy = sp.lambdify(args, expr, modules="numpy")

    def __repr__(self) -> str:
        return f"{self.estimator!r}.bind(bits={self.bits}, m={self.m:g})"

    def _offset(self, w):
        """``u = w − c``, the offset from the rounding threshold of the bin holding ``w``."""
        floor = torch.floor if isinstance(w, torch.Tensor) else np.floor
        index = (floor((w + self.m) / self.delta)).clip(0, self._top_bin)
        return w - (-self.m + (index + 0.5) * self.delta)

    def derivative(self, w: torch.Tensor, grad_sign: torch.Tensor | None = None) -> torch.Tensor:
        """``Q̂′(w)`` in torch: the bin's shape inside ``[-m, m]``, 0 outside."""
        if self.estimator.depends_on_gradient_sign:
            if grad_sign is None:
                raise ValueError(
                    f"grad_sign is required: {self.estimator.name}'s derivative depends on the "
                    "sign of the incoming gradient"
                )
            value = self._torch(self._offset(w), grad_sign)
        else:
            value = self._torch(self._offset(w))
        if not isinstance(value, torch.Tensor):  # a constant Q̂′ (the STE) lambdifies to a number
            value = torch.full_like(w, float(value))
        return torch.where(torch.abs(w) <= self.m, value, 0.0)

    def derivative_numpy(self, w: np.ndarray) -> np.ndarray:
        """``Q̂′(w)`` in NumPy (for an estimator of one fixed ``Q̂′``), 0 outside ``[-m, m]``."""
        w = np.asarray(w, dtype=np.float64)
        value = np.broadcast_to(self._numpy(self._offset(w)), w.shape)
        return np.where(np.abs(w) <= self.m, value, 0.0)

    def quantize_values(self, w):
        """``Q(w) = Δ·round((clip(w, −m, m) + m)/Δ) − m``, for a tensor or an array."""
        return quantize_values(w, self.m, self.delta)

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """``Q(w)`` forward, ``Q̂′(w)·grad`` backward."""
        return _QuantizeWithEstimator.apply(w, self)

    @functools.cached_property
    def alpha(self) -> float:
        """``α = Δ / ∫_bin du/Q̂′(u)``, computed once."""
        return self.estimator.alpha(self.bits, self.m)

    def weight_map(self, w: torch.Tensor) -> torch.Tensor:
        """``M(w)`` (see ``Estimator.weight_map``)."""
        return self.estimator.weight_map(w, self.bits, self.m)


class _QuantizeWithEstimator(torch.autograd.Function):
    """``Q(w)`` forward; the bound estimator's ``Q̂′(w)`` times the incoming gradient backward."""

    @staticmethod
    def forward(ctx, w, bound: BoundEstimator):  # noqa: D401
        ctx.save_for_backward(w)
        ctx.bound = bound
        return bound.quantize_values(w)

    @staticmethod
    def backward(ctx, grad_output):
        (w,) = ctx.saved_tensors
        bound = ctx.bound
        grad_sign = sign(grad_output) if bound.estimator.depends_on_gradient_sign else None
        return grad_output * bound.derivative(w, grad_sign), None


# --- the registered estimators ------------------------------------------------------------------

#: The sharpness the authors used for DSQ (``k = sharpness / m``), by bit width.
DSQ_AUTHORS_SHARPNESS = {1: 2.0, 2: 6.5, 4: 18.0}


def dsq_default_sharpness(bits: int) -> float:
    """The authors' DSQ sharpness; other bit widths keep ``kΔ`` of the nearest tabulated width below."""
    below = max(b for b in DSQ_AUTHORS_SHARPNESS if b <= bits)
    k_delta = 2 * DSQ_AUTHORS_SHARPNESS[below] / (2**below - 1)
    return k_delta * (2**bits - 1) / 2


def _dsq() -> Definition:
    sharp = Parameter(
        "sharpness", "k·m: the tanh's sharpness relative to the range", dsq_default_sharpness
    )
    k = sharp.symbol / M_RANGE
    s = 1 / sp.tanh(k * DELTA / 2)
    return Definition(
        "dsq",
        "DSQ (differentiable soft quantization, tanh-shaped)",
        DELTA / 2 * s * k * sp.sech(k * u) ** 2,
        (sharp,),
    )


def _pwl() -> Definition:
    floor = Parameter(
        "floor",
        "Q̂′ at the levels (the bin edges); → 1 tends to the STE, 0 is ApproxSign",
        0.5,
        lower=0.0,
        upper=1.0,
        lower_open=False,
        upper_open=True,
    )
    return Definition(
        "pwl",
        "piecewise-linear (a tent-shaped Q̂′ peaking at the rounding threshold)",
        floor.symbol + 2 * (1 - floor.symbol) * (1 - 2 * sp.Abs(u) / DELTA),
        (floor,),
    )


def _swish_sign() -> Definition:
    sharp = Parameter("sharpness", "β·Δ/2: SwishSign's β relative to half a bin", 2.0)
    beta = 2 * sharp.symbol / DELTA

    def swish_sign(x):  # SwishSign of BNN+: 2σ(βx)(1 + βx(1 - σ(βx))) - 1
        sig = 1 / (1 + sp.exp(-beta * x))
        return 2 * sig * (1 + beta * x * (1 - sig)) - 1

    slope = beta * (2 - beta * u * sp.tanh(beta * u / 2)) / (1 + sp.cosh(beta * u))
    return Definition(
        "swish_sign",
        "SwishSign (BNN+), scaled to integrate to Δ over a bin",
        DELTA / (2 * swish_sign(DELTA / 2)) * slope,
        (sharp,),
    )


def _ewgs() -> Definition:
    scaling = Parameter(
        "scaling",
        "δ: how strongly the gradient is scaled by the rounding error",
        0.2,
        0.0,
        math.inf,
        False,
    )
    rounding_error = (
        sp.Piecewise((u + DELTA / 2, u < 0), (u - DELTA / 2, True)) / DELTA
    )  # (w - Q(w))/Δ
    return Definition(
        "ewgs",
        "EWGS (element-wise gradient scaling)",
        1 + scaling.symbol * GRAD_SIGN * rounding_error,
        (scaling,),
        outside_theory="its backward depends on the sign of the incoming gradient",
    )


_DEFINITIONS: dict[str, Definition] = {
    d.name: d
    for d in (
        Definition("ste", "clipped straight-through estimator", sp.Integer(1) + 0 * u),
        _pwl(),
        _dsq(),
        Definition(
            "approx_sign",
            "ApproxSign-style polynomial (Bi-Real Net), vanishing at the levels",
            2 * (1 - 2 * sp.Abs(u) / DELTA),
            outside_theory="Q̂′ vanishes at the levels, so ∫ du/Q̂′ diverges",
        ),
        _swish_sign(),
        _ewgs(),
    )
}


def names() -> list[str]:
    """Names of the registered estimators."""
    return list(_DEFINITIONS)


def definition(name: str) -> Definition:
    """The registered definition called ``name``."""
    if name not in _DEFINITIONS:
        raise ValueError(f"unknown estimator name {name!r}; allowed: {', '.join(_DEFINITIONS)}")
    return _DEFINITIONS[name]


def get(name: str | Estimator, **params: float | None) -> Estimator:
    """The estimator called ``name`` with the given parameters (defaults for the rest)."""
    if isinstance(name, Estimator):
        if params:
            raise ValueError("params cannot be given with an Estimator instance")
        return name
    if not isinstance(name, str):
        raise TypeError(f"name must be an estimator name (str), got {type(name).__name__}")
    return Estimator(definition(name), **params)


def register(new: Definition) -> None:
    """Add a reader's own estimator to the registry (a name may not be registered twice)."""
    if new.name in _DEFINITIONS:
        raise ValueError(f"estimator name {new.name!r} is already registered")
    unknown = new.derivative.free_symbols - set(new.arguments)
    if unknown:
        raise ValueError(f"derivative uses unknown symbols {sorted(map(str, unknown))}")
    _DEFINITIONS[new.name] = new


def describe() -> list[dict[str, object]]:
    """One row per registered estimator: name, title, theory status, how its map is computed."""
    rows = []
    for name in names():
        d = definition(name)
        rows.append(
            {
                "name": name,
                "title": d.title,
                "in_theory": d.outside_theory is None,
                "why_not": d.outside_theory or "",
            }
        )
    return rows
