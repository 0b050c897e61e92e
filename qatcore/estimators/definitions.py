"""Gradient estimators, each defined once as a sympy expression of its derivative within one bin.

A custom estimator replaces the zero derivative of the quantizer ``Q`` in the backward pass by
``Q̂′(w)``. Here ``Q̂′`` is written once, as a sympy expression in ``u = w - c``, the offset from
the rounding threshold ``c`` at the centre of the bin holding ``w`` (``u ∈ [-Δ/2, Δ/2]``), the
step ``Δ``, the range ``m`` and the estimator's own parameters. The estimator repeats that shape in
every bin of ``[-m, m]`` and is 0 outside (the clip). This module holds the symbols, the definition
and what sympy derives from it once: ``∫ 1/Q̂′`` in closed form when sympy finds one (otherwise
``qatcore.estimators.estimator`` integrates by Gauss–Legendre quadrature) and the lambdified
derivative. ``estimator`` binds a definition to parameter values (α, M, the torch backward);
``registry`` holds the named estimators.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

# The symbols every definition is written in.
u = sp.Symbol("u", real=True)  # offset from the bin's centre (its rounding threshold)
DELTA = sp.Symbol("Delta", positive=True)  # step between levels
M_RANGE = sp.Symbol("m", positive=True)  # quantizer range [-m, m]
GRAD_SIGN = sp.Symbol("sigma", real=True)  # sign of the incoming gradient (EWGS only)
_s = sp.Symbol("s", real=True)  # integration variable

CLOSED_FORM = "closed form"
QUADRATURE = "numeric quadrature"


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
        number, shown = math.nan, value
        if not bad:
            number = shown = float(value)  # type: ignore[arg-type]  # a numbers.Real, checked above
            low_ok = number > self.lower if self.lower_open else number >= self.lower
            high_ok = number < self.upper if self.upper_open else number <= self.upper
            bad = not (math.isfinite(number) and low_ok and high_ok)
        if bad:
            low = f"> {self.lower:g}" if self.lower_open else f">= {self.lower:g}"
            high = (
                ""
                if math.isinf(self.upper)
                else f" and {'<' if self.upper_open else '<='} {self.upper:g}"
            )
            raise ValueError(f"{self.name} must be a number {low}{high}, got {shown!r}")
        return number


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
