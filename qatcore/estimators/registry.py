"""The named estimators: the STE, piecewise-linear, DSQ, ApproxSign, SwishSign and EWGS, and a
reader's own (``register``)."""

from __future__ import annotations

import math

import sympy as sp

from qatcore.estimators.definitions import DELTA, GRAD_SIGN, M_RANGE, Definition, Parameter, u
from qatcore.estimators.estimator import Estimator

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
    """One row per registered estimator: its name, title, whether the theory covers it and, if not, why."""
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
