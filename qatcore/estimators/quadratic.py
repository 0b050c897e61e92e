"""A numeric cross-check of "custom estimators are STEs in disguise" on a random quadratic loss.

The loss ``½ (q − t)ᵀ A (q − t)`` is evaluated on the quantized weights ``q = Q(w)``, so its
gradient ``g = A(q − t)`` depends on the latent weights only through ``Q(w)``, as the theorem
requires. A run with a custom estimator ``Q̂′`` (rate ``η``, start ``w₀``) is paired with an STE
run: for SGD, plain or with heavy-ball momentum, the STE starts at ``M(w₀)`` with rate ``αη``; for
Adam it starts at ``w₀`` with rate ``η``. The theory says the pair parts by ``O(η²)`` in one step and by
``O(η)`` over a fixed training time ``steps·η``; ``one_step_gap``, ``fixed_time_gap`` and
``fit_slope`` measure both orders.

The defaults (``DEFAULT_ETAS``, ``DEFAULT_TIME``, 16 weights, 2 bits, ``m = 1``) put every η in
the asymptotic regime for DSQ and PWL: the ranges stop where ``gap/η`` starts to drift with η, and
the times were set from how far the weights travel. They were checked on ten seeds, not only the
default one, and each fitted slope stayed within 0.1 of the theory. Momentum needs rates about 300
times smaller than SGD's: its velocity is ``1/(1−λ) = 10`` times the gradient, and it adds up
gradients from about ``λ/(1−λ) = 9`` steps back, where ``Q̂′`` was different. Everything is
float64 and deterministic given the problem's seed.

The update rules are ``qatcore.optimizers.OptimizerConfig``s, with the names training uses:
``PLAIN_SGD`` (momentum 0), ``SGD_MOMENTUM`` (0.9, training's default) and ``ADAM`` (β₂ = 0.95,
with ε = 1e-12 so that its scale invariance shows to float64's precision). The default is plain
SGD, the rule of the theorem; a config's ``lr`` and schedule are not used here (the rate is ``η``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from qatcore import estimators
from qatcore.checks import int_at_least, positive_number
from qatcore.estimators import Estimator
from qatcore.optimizers import ADAM_BETA1, OptimizerConfig
from qatcore.quantizers import (
    bin_centre,
    check_bits,
    check_range,
    levels,
    step_size,
    thresholds,
    uniform_quantize,
)

PLAIN_SGD = OptimizerConfig("sgd", momentum=0.0)
SGD_MOMENTUM = OptimizerConfig("sgd")
ADAM = OptimizerConfig("adam", eps=1e-12)
#: The rules the notebook compares, keyed by their labels ("plain SGD", "SGD, momentum 0.9", "Adam").
RULES = {rule.label: rule for rule in (PLAIN_SGD, SGD_MOMENTUM, ADAM)}
EIGENVALUE_RANGE = (0.5, 2.0)

#: Training time ``steps·η`` of ``fixed_time_gap``. In time 1, SGD moves the median weight about a
#: third of a bin (2 bits, ``m = 1``, seeds 0–3), and the farthest about one bin. Most weights
#: reach a threshold and then hop back and forth across it, thousands of times in all. Momentum
#: moves 10 times faster per unit of time. Its time is 50 times shorter, so the median weight moves
#: a tenth of a bin, the farthest half a bin, and a third of the weights still cross.
DEFAULT_TIME = {PLAIN_SGD.label: 1.0, SGD_MOMENTUM.label: 0.02, ADAM.label: 1.0}

#: η ranges where the gaps of DSQ and PWL at 2 bits follow their leading order (for Adam: where
#: DSQ's fixed-time gap to the same-start, same-rate STE falls about ∝ η, seed 0). SGD's range spans
#: 1.5 decades. Momentum's spans one decade: its higher-order terms are larger, so its rates are
#: smaller, and each further decade down would cost ten times the steps.
DEFAULT_ETAS = {
    PLAIN_SGD.label: np.logspace(-3.5, -2.0, 5),
    SGD_MOMENTUM.label: np.logspace(-5.5, -4.5, 5),
    ADAM.label: np.logspace(-3.5, -2.0, 5),
}

Rule = OptimizerConfig | str


def _rule(optimizer: Rule) -> OptimizerConfig:
    """The ``OptimizerConfig`` of ``optimizer`` (a name means what it means in training)."""
    return OptimizerConfig.of(optimizer)


def default_etas(optimizer: Rule) -> np.ndarray:
    """The η range of ``optimizer`` where the gaps follow their leading order (``DEFAULT_ETAS``)."""
    label = _rule(optimizer).label
    if label not in DEFAULT_ETAS:
        raise ValueError(
            f"no default η range for {label}; the defaults are for {sorted(DEFAULT_ETAS)}"
        )
    return DEFAULT_ETAS[label].copy()


def _check_etas(etas: Sequence[float]) -> np.ndarray:
    try:
        values = np.asarray(etas, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"etas must be a sequence of learning rates, got {etas!r}") from None
    if values.ndim != 1 or len(values) < 2 or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"etas must be at least 2 finite learning rates > 0, got {etas!r}")
    return values


def _check_weights(name: str, w: object, dim: int) -> np.ndarray:
    if not isinstance(w, torch.Tensor) or w.shape != (dim,) or not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} must be a finite tensor of shape ({dim},), got {w!r}")
    return w.detach().to(torch.float64).numpy()


@dataclass(frozen=True)
class QuadraticProblem:
    """A random well-conditioned quadratic loss on ``dim`` quantized weights, fixed by ``seed``."""

    dim: int = 16
    bits: int = 2
    m: float = 1.0
    seed: int = 0
    # drawn from seed in __post_init__; not arguments, and left out of repr and comparison
    _matrix: torch.Tensor = field(init=False, repr=False, compare=False)
    _target: torch.Tensor = field(init=False, repr=False, compare=False)
    _w0: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        int_at_least("dim", self.dim, 1)
        check_bits(self.bits)
        object.__setattr__(self, "m", check_range(self.m))
        int_at_least("seed", self.seed, 0)
        generator = torch.Generator().manual_seed(self.seed)

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(
                self.dim, generator=generator, dtype=torch.float64
            )

        basis, _ = torch.linalg.qr(
            torch.randn(self.dim, self.dim, generator=generator, dtype=torch.float64)
        )
        matrix = (basis * uniform(*EIGENVALUE_RANGE)) @ basis.T
        object.__setattr__(self, "_matrix", (matrix + matrix.T) / 2)  # symmetric to the last bit
        object.__setattr__(self, "_target", uniform(-self.m, self.m))
        object.__setattr__(self, "_w0", uniform(-self.m, self.m))

    @property
    def matrix(self) -> torch.Tensor:
        """The symmetric positive-definite ``A``, eigenvalues in [0.5, 2] (a copy)."""
        return self._matrix.clone()

    @property
    def target(self) -> torch.Tensor:
        """The minimiser ``t`` of the loss before quantization, uniform in ``[−m, m]`` (a copy)."""
        return self._target.clone()

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """``Q(w)`` at this problem's bit width and range: the weights the loss sees."""
        return uniform_quantize(w, self.bits, self.m)

    def loss(self, q: torch.Tensor) -> torch.Tensor:
        """``½ (q − t)ᵀ A (q − t)`` of quantized weights ``q`` (differentiable, batched over rows)."""
        r = q - self._target
        return 0.5 * ((r @ self._matrix) * r).sum(-1)

    def gradient(self, q: torch.Tensor) -> torch.Tensor:
        """``A(q − t)`` in closed form: the loss gradient with respect to the quantized weights."""
        return (q - self._target) @ self._matrix

    def initial_weights(self) -> torch.Tensor:
        """A start ``w₀`` drawn uniformly from ``[−m, m]``, the same for the same seed (a copy)."""
        return self._w0.clone()


# --- training ---------------------------------------------------------------------------------

#: ``Q̂′`` as a function of the latent weights and the loss gradient (numpy arrays, float64).
Slope = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _estimator_slope(problem: QuadraticProblem, estimator: Estimator) -> Slope:
    """``Q̂′(w)`` of ``estimator`` bound at the problem's bits and range (``Estimator.bind``: checked
    and compiled once, not on each of thousands of steps), as a NumPy function of ``(w, g)``."""
    bound = estimator.bind(problem.bits, problem.m)
    if estimator.depends_on_gradient_sign:  # outside the theory: its Q̂′ needs the gradient's sign

        def by_gradient_sign(w: np.ndarray, g: np.ndarray) -> np.ndarray:
            return bound.derivative(
                torch.from_numpy(w), torch.from_numpy(np.where(g >= 0, 1.0, -1.0))
            ).numpy()

        return by_gradient_sign
    return lambda w, g: bound.derivative_numpy(w)


class _Quantized:
    """``Q(w)`` of each step into buffers kept from step to step, with what ``Q̂′`` shares with it.

    ``Q`` is ``quantizers.quantize_values``, op for op and in its order, so it has its bits. On the
    way it keeps ``scaled = (clip(w, −m, m) + m)/Δ``, whose floor is the index of the bin of ``w``:
    for ``w`` in ``[−m, m]``, the only weights where ``Q̂′`` is not 0, the clip leaves ``w`` as it
    is and ``scaled`` is ``(w + m)/Δ``, as ``BoundEstimator._offset`` computes it. ``inside`` is
    ``|w| ≤ m``, which holds exactly where the clip leaves ``w`` as it is. The constants are 0-d
    arrays: a ufunc converts a Python float anew on every call.
    """

    def __init__(self, problem: QuadraticProblem, shape: tuple[int, ...]) -> None:
        self.m, self.low = np.array(problem.m), np.array(-problem.m)
        self.delta = np.array(step_size(problem.bits, problem.m))
        self.scaled, self.q = np.empty(shape), np.empty(shape)
        self.inside = np.empty(shape, dtype=bool)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """``Q(w)``, in a buffer the next call overwrites; ``scaled`` and ``inside`` are then ``w``'s."""
        scaled, q = self.scaled, self.q
        np.minimum(np.maximum(w, self.low, out=scaled), self.m, out=scaled)
        np.equal(scaled, w, out=self.inside)
        np.divide(np.add(scaled, self.m, out=scaled), self.delta, out=scaled)
        np.multiply(self.delta, np.rint(scaled, out=q), out=q)
        return np.subtract(q, self.m, out=q)


class _FixedSlopes:
    """``Q̂′`` of estimators of one fixed ``Q̂′`` each (none that needs the gradient's sign), each on
    its rows: the runs of several estimators trained in one loop, or one run (``slice(None)``).

    ``reading(quantized)`` is the ``Slope`` of the weights that ``quantized`` has just quantized,
    with their bins taken from its ``scaled`` rather than found again. The bin's index is the floor
    of ``scaled`` (``astype`` truncates, which is the floor for ``scaled ≥ 0``), its threshold ``c``
    is looked up among ``quantizers.bin_centre``'s (``take``'s clip mode puts ``w = m`` into the
    top bin, as ``BoundEstimator._offset``'s clip does), and ``Q̂′`` is the bound estimator's at the
    offset ``u = w − c``. A constant ``Q̂′`` (the STE's) is written once, not at every step. The
    values, to the bit, are ``BoundEstimator.derivative_numpy``'s.
    """

    def __init__(
        self, problem: QuadraticProblem, blocks: Sequence[tuple[Estimator, slice]]
    ) -> None:
        bits, m = problem.bits, problem.m
        self.blocks = [(estimator.bind(bits, m), rows) for estimator, rows in blocks]
        index = torch.arange(2**bits - 1, dtype=torch.float64)
        self.centres = bin_centre(index, bits, m).numpy()

    def reading(self, quantized: _Quantized) -> Slope:
        """The ``Slope`` of the weights last quantized by ``quantized`` (its ``g`` is not used)."""
        values, masked = np.empty(quantized.inside.shape), np.empty(quantized.inside.shape)
        varying = []  # with the rows' views of scaled and values, taken once
        for bound, rows in self.blocks:
            if bound.constant is None:
                varying.append(
                    (bound.derivative_at_offsets, rows, quantized.scaled[rows], values[rows])
                )
            else:
                values[rows] = bound.constant
        centres, inside = self.centres, quantized.inside

        def slope(w: np.ndarray, g: np.ndarray) -> np.ndarray:
            for derivative, rows, scaled, block in varying:
                block[...] = derivative(w[rows] - centres.take(scaled.astype(np.intp), mode="clip"))
            masked.fill(0.0)  # np.where(inside, values, 0.0), into a buffer
            np.copyto(masked, values, where=inside)
            return masked

        return slope


def _slopes(
    problem: QuadraticProblem, blocks: Sequence[tuple[Estimator, slice]]
) -> Slope | _FixedSlopes:
    """``Q̂′`` of runs of several estimators trained in one loop, each on its rows (``slice(None)``
    for one run): ``_FixedSlopes`` unless one needs the gradient's sign, else each estimator's
    ``_estimator_slope`` on its rows."""
    if not any(estimator.depends_on_gradient_sign for estimator, _ in blocks):
        return _FixedSlopes(problem, blocks)
    slopes = [(_estimator_slope(problem, estimator), rows) for estimator, rows in blocks]

    def by_rows(w: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.concatenate([slope(w[rows], g[rows]) for slope, rows in slopes])

    return by_rows


#: A rule's step at step ``t`` (from 1) from the estimate ``Q̂′(w)·g``: ``w ← w − η·step``.
Step = Callable[[np.ndarray, int], np.ndarray]


def _rule_step(rule: OptimizerConfig, shape: tuple[int, ...]) -> Step:
    """``rule``'s step, PyTorch's, with its state kept from call to call: the estimate itself for
    plain SGD, the heavy ball ``p ← λp + g`` for SGD with momentum (``p`` in a buffer, updated in
    place) and Adam's bias-corrected ``m̂/(√v̂ + ε)``."""
    first, second = np.zeros(shape), np.zeros(shape)
    beta1, beta2, momentum = ADAM_BETA1, rule.beta2, np.array(rule.momentum)

    def plain(estimate: np.ndarray, t: int) -> np.ndarray:
        return estimate

    def heavy_ball(estimate: np.ndarray, t: int) -> np.ndarray:
        return np.add(np.multiply(momentum, first, out=first), estimate, out=first)

    def adam(estimate: np.ndarray, t: int) -> np.ndarray:
        nonlocal first, second
        first = beta1 * first + (1 - beta1) * estimate
        second = beta2 * second + (1 - beta2) * estimate**2
        return first / (1 - beta1**t) / (np.sqrt(second / (1 - beta2**t)) + rule.eps)

    if rule.name == "sgd":
        return heavy_ball if rule.momentum else plain
    return adam


def _train(
    problem: QuadraticProblem,
    slope: Slope | _FixedSlopes,
    eta: float | np.ndarray,
    steps: int,
    rule: OptimizerConfig,
    w0: np.ndarray,
) -> np.ndarray:
    """Latent weights ``(steps+1, *w0.shape)`` of ``rule`` on the estimate ``Q̂′(w)·g(Q(w))``.

    Rows of a 2-d ``w0`` are independent runs, each with its own rate in ``eta`` (shape ``(n, 1)``).
    A row gives the same bits as training it alone: the gradient's product is ``einsum``'s, which
    sums each row in the same order whatever the rows beside it (a BLAS matmul's last bits depend on
    how many rows it multiplies), and every other op is elementwise. Written in numpy rather than
    torch: with 16 weights, each call costs more than its arithmetic (a torch call more than a numpy
    one), and the scaling checks and the twin-runs dashboard take thousands of steps. So a step
    makes few calls: into buffers kept from step to step, with ``Q`` and ``Q̂′`` sharing the bins of
    ``w`` (``_Quantized``, ``_FixedSlopes``). ``Q`` is ``quantizers.quantize_values``, the same as
    ``uniform_quantize``.
    """
    matrix, target = problem.matrix.numpy(), problem.target.numpy()
    quantize, step = _Quantized(problem, w0.shape), _rule_step(rule, w0.shape)
    slope_of = slope.reading(quantize) if isinstance(slope, _FixedSlopes) else slope
    rate = np.broadcast_to(eta, w0.shape).copy()  # a ufunc costs more where it broadcasts a column
    g, estimate, moved = np.empty(w0.shape), np.empty(w0.shape), np.empty(w0.shape)
    trajectory = np.empty((steps + 1, *w0.shape))
    w = trajectory[0] = w0
    for t in range(1, steps + 1):
        q = quantize(w)
        np.einsum("...i,ij->...j", np.subtract(q, target, out=q), matrix, out=g)
        np.multiply(slope_of(w, g), g, out=estimate)
        w = np.subtract(w, np.multiply(rate, step(estimate, t), out=moved), out=trajectory[t])
    return trajectory


def simulate(
    problem: QuadraticProblem,
    estimator: Estimator | str,
    eta: float,
    steps: int,
    optimizer: Rule = PLAIN_SGD,
    w0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Latent weights ``(steps+1)×dim`` of training with the estimator's backward ``Q̂′(w)·g``."""
    estimator = estimators.get(estimator)
    eta = positive_number("eta", eta)
    steps = int_at_least("steps", steps, 0)
    rule = _rule(optimizer)
    start = _check_weights("w0", problem.initial_weights() if w0 is None else w0, problem.dim)
    slope = _slopes(problem, [(estimator, slice(None))])
    return torch.from_numpy(_train(problem, slope, eta, steps, rule, start))


# --- paired runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedRun:
    """A custom-estimator run, the STE run the theory pairs it with, and the gap between them.

    ``gap[t]`` is ``max_i |M(w_t) − v_t|`` for adjusted SGD (plain or momentum), which is the theorem's
    claim in ``M``-space. For Adam and for the unadjusted baseline it is ``max_i |w_t − v_t|``,
    because they claim the runs agree as they are. ``agreement`` is the fraction of weights with
    ``Q(w_T) == Q(v_T)`` at the end. ``mean_agreement`` is the same fraction averaged over all
    steps; it is less affected by weights that hop across a threshold near the end.
    """

    optimizer: OptimizerConfig
    eta: float
    adjusted: bool
    alpha: float
    custom: torch.Tensor
    ste: torch.Tensor
    gap: torch.Tensor
    agreement: float
    mean_agreement: float

    @property
    def max_gap(self) -> float:
        """The largest gap along the run."""
        return float(self.gap.max())


def _pairs(
    problem: QuadraticProblem,
    estimator: Estimator,
    etas: np.ndarray,
    steps: int,
    rule: OptimizerConfig,
    adjusted: tuple[bool, ...],
    w0: np.ndarray,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
    """The custom runs for every η (one row each, ``(steps+1, n, dim)``), and for each entry of
    ``adjusted`` its STE runs, gap ``(steps+1, n)`` and α. All of them train in one loop, the custom
    runs' rows first, then each entry's STE rows; each row is the run it would be alone."""
    bits, m = problem.bits, problem.m
    n = len(etas)
    rates, starts = [etas[:, None]], [np.tile(w0, (n, 1))]
    maps = []
    for each in adjusted:
        remap = each and rule.name == "sgd"
        alpha = estimator.alpha(bits, m) if remap else 1.0
        to_ste_space = (
            (lambda w: estimator.weight_map(torch.from_numpy(w), bits, m).numpy())
            if remap
            else (lambda w: w)
        )
        rates.append(alpha * rates[0])
        starts.append(to_ste_space(starts[0]))
        maps.append((to_ste_space, alpha))
    slope = _slopes(problem, [(estimator, slice(0, n)), (estimators.get("ste"), slice(n, None))])
    runs = _train(problem, slope, np.concatenate(rates), steps, rule, np.concatenate(starts))
    custom = runs[:, :n]
    pairs = []
    for k, (to_ste_space, alpha) in enumerate(maps, start=1):
        ste = runs[:, k * n : (k + 1) * n]
        pairs.append((ste, np.abs(to_ste_space(custom) - ste).max(axis=-1), alpha))
    return custom, pairs


def paired_runs(
    problem: QuadraticProblem,
    estimator: Estimator | str,
    eta: float,
    steps: int,
    optimizer: Rule = PLAIN_SGD,
    adjusted: bool = True,
    w0: torch.Tensor | None = None,
) -> PairedRun:
    """Train with the custom estimator and with its STE counterpart, to measure how far they part.

    Adjusted, the STE starts at ``M(w₀)`` with rate ``αη`` for SGD (plain or momentum), and at ``w₀`` with
    rate ``η`` for Adam (no remapping). Unadjusted (the naive baseline), it starts at ``w₀`` with
    rate ``η`` for every optimizer; for Adam the two choices are the same.
    """
    if not isinstance(adjusted, bool):
        raise ValueError(f"adjusted must be True or False, got {adjusted!r}")
    return _paired_runs(problem, estimator, eta, steps, optimizer, w0, (adjusted,))[0]


def adjusted_and_unadjusted_runs(
    problem: QuadraticProblem,
    estimator: Estimator | str,
    eta: float,
    steps: int,
    optimizer: Rule = PLAIN_SGD,
    w0: torch.Tensor | None = None,
) -> tuple[PairedRun, PairedRun]:
    """``paired_runs`` adjusted and unadjusted, the same numbers, with the custom run both pair
    trained once rather than twice."""
    adjusted, unadjusted = _paired_runs(
        problem, estimator, eta, steps, optimizer, w0, (True, False)
    )
    return adjusted, unadjusted


def _paired_runs(
    problem: QuadraticProblem,
    estimator: Estimator | str,
    eta: float,
    steps: int,
    optimizer: Rule,
    w0: torch.Tensor | None,
    adjusted: tuple[bool, ...],
) -> list[PairedRun]:
    """One ``PairedRun`` per entry of ``adjusted``, all pairing one custom run."""
    estimator = estimators.get(estimator)
    eta = positive_number("eta", eta)
    steps = int_at_least("steps", steps, 0)
    rule = _rule(optimizer)
    start = _check_weights("w0", problem.initial_weights() if w0 is None else w0, problem.dim)
    custom, pairs = _pairs(problem, estimator, np.array([eta]), steps, rule, adjusted, start)
    runs = []
    for each, (ste, gap, alpha) in zip(adjusted, pairs, strict=True):
        same = problem.quantize(torch.from_numpy(custom[:, 0])) == problem.quantize(
            torch.from_numpy(ste[:, 0])
        )
        runs.append(
            PairedRun(
                rule,
                eta,
                each,
                alpha,
                custom=torch.from_numpy(custom[:, 0]),
                ste=torch.from_numpy(ste[:, 0]),
                gap=torch.from_numpy(gap[:, 0]),
                agreement=float(same[-1].double().mean()),
                mean_agreement=float(same.double().mean()),
            )
        )
    return runs


# --- the two orders of the theory -------------------------------------------------------------


def _step_bound(problem: QuadraticProblem, estimator: Estimator) -> float:
    """A bound on ``|Q̂′(w)·g|`` at any weights: ``max Q̂′ · max_i Σ_j |A_ij| (m + |t_j|)``."""
    grid = torch.linspace(-problem.m, problem.m, 4001, dtype=torch.float64)
    slope = float(estimator.derivative(grid, problem.bits, problem.m).abs().max())
    gradient = float((problem.matrix.abs() @ (problem.m + problem.target.abs())).max())
    return slope * gradient


def safe_start(problem: QuadraticProblem, reach: float) -> torch.Tensor:
    """``w₀`` with every weight more than ``reach`` from each threshold and level (``±m`` included).

    Any weight of ``initial_weights()`` that is too close is drawn again from a generator seeded by
    the problem's seed, so the result is the same every time. Steps that move no weight further
    than ``reach`` then cross no threshold, bin edge or clip.
    """
    reach = positive_number("reach", reach)
    marks = torch.cat([thresholds(problem.bits, problem.m), levels(problem.bits, problem.m)])
    spacing = float(marks.sort().values.diff().min())
    if reach >= 0.45 * spacing:
        raise ValueError(
            f"reach must be below {0.45 * spacing:.4g} (0.45 of the distance between a threshold "
            f"and a level), got {reach!r}"
        )
    generator = torch.Generator().manual_seed(problem.seed + 1)
    w0 = problem.initial_weights()
    while True:
        too_close = (w0[:, None] - marks).abs().amin(dim=1) <= reach
        if not too_close.any():
            return w0
        fresh = problem.m * (
            2 * torch.rand(problem.dim, generator=generator, dtype=torch.float64) - 1
        )
        w0 = torch.where(too_close, fresh, w0)


def one_step_gap(
    problem: QuadraticProblem,
    estimator: Estimator | str,
    etas: Sequence[float],
    optimizer: Rule = PLAIN_SGD,
    steps: int = 1,
) -> np.ndarray:
    """The gap after one step (or ``steps`` steps) for each ``η``; the theory says ``O(η²)``.

    Every run starts from ``safe_start``. No weight starts within ``max(η)·max|Q̂′g|·steps²`` of a
    threshold, level or ``±m``, so at the largest ``η`` no weight reaches one: ``g`` stays fixed and
    the gap is the Taylor remainder of ``M`` alone. For momentum from rest, the first step is
    SGD's; pass ``steps > 1`` to let the velocity build up. Adam is excluded because its first
    step is ``η·sign(g)`` for every estimator, so there is no ``η²`` term to measure.
    """
    estimator = estimators.get(estimator)
    rates = _check_etas(etas)
    rule = _rule(optimizer)
    if rule.name != "sgd":
        raise ValueError(
            f"optimizer must be SGD (plain or with momentum): Adam's first step has no η² term, got {rule.label}"
        )
    steps = int_at_least("steps", steps, 1)
    w0 = safe_start(problem, rates.max() * _step_bound(problem, estimator) * steps**2)
    _, [(_, gap, _)] = _pairs(problem, estimator, rates, steps, rule, (True,), w0.numpy())
    return gap[-1]


def fixed_time_gap(
    problem: QuadraticProblem,
    estimator: Estimator | str,
    etas: Sequence[float],
    time: float | None = None,
    optimizer: Rule = PLAIN_SGD,
) -> np.ndarray:
    """The largest gap over ``round(time/η)`` steps for each ``η``; the theory says ``O(η)``.

    The maximum over the run is used instead of the final value because it matches the theorem,
    which bounds the gap over the whole run. Within time 1, SGD's weights reach thresholds and then
    hop back and forth across them every few steps. Each hop changes ``g`` for every weight, and the
    two runs hop a step apart in a pattern that depends on ``η``. The gap stays ``O(η)``, but its
    final value swings by up to a factor of 2 from one ``η`` to the next, while the running
    maximum varies by at most 1.2 (``gap/η``, seeds 0–3). Every step of every run counts; none is dropped.
    """
    estimator = estimators.get(estimator)
    rates = _check_etas(etas)
    rule = _rule(optimizer)
    if time is None and rule.label not in DEFAULT_TIME:
        raise ValueError(f"no default time for {rule.label}; pass time (defaults: {DEFAULT_TIME})")
    time = DEFAULT_TIME[rule.label] if time is None else positive_number("time", time)
    steps = [max(1, round(time / eta)) for eta in rates]
    w0 = problem.initial_weights().numpy()
    _, [(_, gap, _)] = _pairs(problem, estimator, rates, max(steps), rule, (True,), w0)
    return np.array([gap[: n + 1, i].max() for i, n in enumerate(steps)])


def fit_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: the order ``p`` of a power law ``y ∝ x^p``."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape or len(xs) < 2:
        raise ValueError(
            f"x and y must be 1-d and of the same length >= 2, got shapes {xs.shape} and {ys.shape}"
        )
    if not (
        np.all(xs > 0) and np.all(ys > 0) and np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))
    ):
        raise ValueError("x and y must be finite and > 0, to take their logarithms")
    if np.ptp(np.log(xs)) == 0:
        raise ValueError("x must hold at least two different values")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def adam_scale_invariance(
    problem: QuadraticProblem,
    scale: torch.Tensor | None = None,
    eta: float = 1e-2,
    steps: int = 100,
) -> dict[str, float]:
    """Per rule of ``RULES`` (by label), the largest difference in weights between training on ``g`` and on ``c·g``.

    Here ``c`` is one positive factor per weight, by default ``10^U(−1, 1)`` drawn from the seed.
    Adam's ``m̂/(√v̂ + ε)`` does not change when each coordinate's gradients are multiplied by a
    constant ``c`` (up to ``ε``), which is why Adam needs no remap. SGD, plain or with momentum, moves ``c``
    times as far. Both runs are STE runs from ``initial_weights()``.
    """
    eta = positive_number("eta", eta)
    steps = int_at_least("steps", steps, 1)
    if scale is None:
        generator = torch.Generator().manual_seed(problem.seed + 2)
        scale = 10 ** (2 * torch.rand(problem.dim, generator=generator, dtype=torch.float64) - 1)
    factor = _check_weights("scale", scale, problem.dim)
    if not np.all(factor > 0):
        raise ValueError(f"scale must hold factors > 0, got {scale!r}")
    ste = _estimator_slope(problem, estimators.get("ste"))

    def scaled(w: np.ndarray, g: np.ndarray) -> np.ndarray:
        return factor * ste(w, g)

    w0 = problem.initial_weights().numpy()
    return {
        label: float(
            np.abs(
                _train(problem, scaled, eta, steps, rule, w0)
                - _train(problem, ste, eta, steps, rule, w0)
            ).max()
        )
        for label, rule in RULES.items()
    }


def derivative_variation(
    problem: QuadraticProblem,
    estimator: Estimator | str,
    eta: float,
    steps: int,
    optimizer: Rule = ADAM,
    window: int = 20,
) -> np.ndarray:
    """How much ``Q̂′`` really varies along a run: for each weight and each ``window`` of steps, the
    ratio max/min of ``Q̂′(w_t)`` over the window (1 = constant, as Adam's cancellation assumes).

    ``window = 20`` is Adam's second-moment horizon ``1/(1 − β₂)`` at β₂ = 0.95. Weights outside the
    range (``Q̂′ = 0``) are left out. Returns the ratios of all (window, weight) pairs, flattened.
    """
    estimator = estimators.get(estimator)
    window = int_at_least("window", window, 2)
    path = simulate(problem, estimator, eta, steps, optimizer)
    slopes = estimator.derivative(path, problem.bits, problem.m).numpy()
    usable = steps + 1 - (steps + 1) % window
    blocks = slopes[:usable].reshape(-1, window, problem.dim)
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    inside = low > 0
    return high[inside] / low[inside]
