"""An estimator: a definition bound to its parameter values.

From the one expression of ``Q̂′`` (``qatcore.estimators.definitions``) it gives the torch backward,
the learning-rate factor ``α = Δ / ∫_bin du / Q̂′(u)`` (the harmonic mean of ``Q̂′`` over a bin) and
the weight map ``M(w) = c + α ∫_0^u ds / Q̂′(s)``, which fixes every threshold ``c`` and, for an
estimator symmetric about ``c``, every level; so ``Q(M(w)) = Q(w)``. ``Estimator.map_method`` says
whether ``∫ 1/Q̂′`` came in closed form or by quadrature.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp
import torch

from qatcore.estimators.definitions import (
    CLOSED_FORM,
    DELTA,
    GRAD_SIGN,
    M_RANGE,
    QUADRATURE,
    Definition,
    derive,
    u,
    without_reciprocal_hyperbolics,
)
from qatcore.quantizers import (
    bin_centre,
    bin_index,
    check_bits,
    check_range,
    quantize_values,
    sign,
    step_size,
)

_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(64)


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
        self._constant = float(expr) if expr.is_number else None  # the STE: no offset to compute

    def __repr__(self) -> str:
        return f"{self.estimator!r}.bind(bits={self.bits}, m={self.m:g})"

    @property
    def constant(self) -> float | None:
        """``Q̂′`` where it is one number throughout the bin (the STE), else ``None``."""
        return self._constant

    def derivative_at_offsets(self, u: np.ndarray) -> np.ndarray | float:
        """``Q̂′`` in NumPy at offsets ``u = w − c`` of weights inside ``[-m, m]`` (an estimator of
        one fixed ``Q̂′``), for a caller that has found their bins already: ``derivative_numpy``'s
        values there. A number for a constant ``Q̂′``."""
        return self._numpy(u)

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
        if self._constant is not None:
            return np.where(np.abs(w) <= self.m, self._constant, 0.0)
        value = self._numpy(self._offset(w))
        if np.shape(value) != w.shape:
            value = np.broadcast_to(value, w.shape)
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
    def forward(ctx, w, bound: BoundEstimator):
        ctx.save_for_backward(w)
        ctx.bound = bound
        return bound.quantize_values(w)

    @staticmethod
    def backward(ctx, grad_output):
        (w,) = ctx.saved_tensors
        bound = ctx.bound
        grad_sign = sign(grad_output) if bound.estimator.depends_on_gradient_sign else None
        return grad_output * bound.derivative(w, grad_sign), None
