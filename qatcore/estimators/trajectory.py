"""How closely two training runs agree: the metrics of *Custom Gradient Estimators are STEs in Disguise*.

The paper trains one quantized network twice: with a custom gradient estimator ``Q̂′`` (run ``a``)
and with the STE from weights remapped by ``M`` at rate ``αη`` (run ``b``). If the theorem holds
the runs coincide; these functions measure how far they do.

* On the quantized weights: the *level index* ``k = round((clip(w, -m, m) + m) / Δ)`` of each
  weight (``Q(w) = -m + kΔ``); the fraction of weights on the same level; the fraction whose
  *change points* (the steps at which the level changes, and the new levels) coincide.
* On the latent weights: the *alignment error*, the final distance ``Σ|M(w_Q̂) - w_STE| / m``
  relative to the distance the STE run travelled, ``Σ_t Σ_i |w_{t+1} - w_t| / m``.
* On the outputs: agreement of the predicted classes, mean squared logit difference, and the
  Pearson correlation of the two loss curves.

Trajectories are ``T × N`` tensors: one row per recorded step, one column per weight (the weights
of several layers concatenated, each column with its own range ``m``). Every metric returns a
Python float (or a tensor for per-step curves), deterministically; bad input raises a ValueError
that names the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch

from qatcore.quantizers import check_bits, check_range, step_size

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# --- argument checks -------------------------------------------------------------------------


def _check_tensor(
    x: object,
    name: str,
    kind: str,
    dim: int | None = None,
    finite: bool = True,
    layout: str = "T × N (steps × weights)",
) -> torch.Tensor:
    """``x`` as a tensor of ``kind`` ("float" or "int") with ``dim`` dimensions, non-empty.

    ``finite``: also reject NaN and inf (callers on long trajectories check their results instead).
    ``layout`` names what the dimensions of a 2-D ``x`` mean, for the error message.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if kind == "float" and not x.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if kind == "int" and x.dtype not in _INTEGER_DTYPES:
        raise ValueError(
            f"{name} must hold integer level indices (see level_indices), got dtype {x.dtype}"
        )
    if dim is not None and x.dim() != dim:
        shape = layout if dim == 2 else f"{dim}-dimensional"
        raise ValueError(f"{name} must be {shape}, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and kind == "float" and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return x


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_levels(
    levels_a: object, levels_b: object, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    a = _check_tensor(levels_a, "levels_a", "int", dim)
    b = _check_tensor(levels_b, "levels_b", "int", dim)
    _check_same_shape(a, b, "levels_a", "levels_b")
    return a, b


def _check_m(m: object, columns: int) -> float | torch.Tensor:
    """The range ``m``: a float, or a float64 tensor of shape ``(columns,)`` (one per weight)."""
    if isinstance(m, torch.Tensor):
        if not m.is_floating_point():
            raise ValueError(f"m must have a floating-point dtype, got {m.dtype}")
        if m.dim() == 0:
            return check_range(float(m))
        if m.shape != (columns,):
            raise ValueError(
                f"m must be a number or a tensor of shape ({columns},) (one range per weight "
                f"column), got shape {tuple(m.shape)}"
            )
        if not bool((torch.isfinite(m) & (m > 0)).all()):
            raise ValueError("m (the quantizer range) must be finite and > 0 in every column")
        return m.detach().to(torch.float64)
    return check_range(m)


# --- quantized weights -----------------------------------------------------------------------


def level_indices(w: torch.Tensor, bits: int, m: float | torch.Tensor) -> torch.Tensor:
    """Level index ``k = round((clip(w, -m, m) + m) / Δ)`` of every weight, so ``Q(w) = -m + kΔ``.

    ``w`` has any shape (one snapshot, or a ``T × N`` trajectory); ``m`` is a float or a tensor
    of shape ``(N,)`` giving each column (last dimension) its own range. The result is int8 for
    up to 7 bits, int16 up to 15 and int32 for 16: small, since trajectories are long.
    """
    bits = check_bits(bits)
    w = _check_tensor(w, "w", "float", finite=False).detach()
    if bool(torch.isnan(w).any()):
        raise ValueError("w must not contain NaN")
    m = _check_m(m, w.shape[-1] if w.dim() else 1)
    if isinstance(m, torch.Tensor):
        if w.dim() == 0:
            raise ValueError("w must have a last dimension when m is given per column")
        m = m.to(w.dtype)
        delta = 2.0 * m / (2**bits - 1)
        clipped = torch.clamp(w, -m, m)  # one per branch: tensor bounds, then number bounds
    else:
        delta = step_size(bits, m)
        clipped = torch.clamp(w, -m, m)
    # The same operations as quantizers.uniform_quantize, so the indices match it exactly.
    k = clipped.add_(m).div_(delta).round_()
    dtype = torch.int8 if bits <= 7 else torch.int16 if bits <= 15 else torch.int32
    return k.to(dtype)


def quantized_weight_agreement(levels_a: torch.Tensor, levels_b: torch.Tensor) -> float:
    """Fraction of weights on the same quantization level, over all entries of two equal shapes.

    The paper's ``|Q(w_a) - Q(w_b)| < Δ/2``: equal level indices (from ``level_indices``).
    """
    a, b = _check_levels(levels_a, levels_b)
    return float((a == b).double().mean())


def agreement_over_training(levels_a: torch.Tensor, levels_b: torch.Tensor) -> torch.Tensor:
    """``quantized_weight_agreement`` at every step of two ``T × N`` level trajectories (float64, T)."""
    a, b = _check_levels(levels_a, levels_b, dim=2)
    return (a == b).double().mean(dim=1)


# --- latent weights --------------------------------------------------------------------------


def path_length(trajectory: torch.Tensor, m: float | torch.Tensor) -> float:
    """Distance a run's weights travel, ``Σ_t Σ_i |w_{t+1,i} - w_{t,i}| / m_i``, over all steps.

    ``trajectory`` is ``T × N``; dividing by ``m`` puts layers with different ranges on one scale.
    A single recorded step (``T = 1``) travels 0.
    """
    w = _check_tensor(trajectory, "trajectory", "float", dim=2, finite=False)
    travelled = _travelled(w, _check_m(m, w.shape[1]))
    if not math.isfinite(travelled):
        raise ValueError("trajectory must be finite (no NaN or inf)")
    return travelled


def _travelled(w: torch.Tensor, m: float | torch.Tensor) -> float:
    """``Σ_i (Σ_t |w_{t+1,i} - w_{t,i}|) / m_i`` in float64 (divided once per column, not per step)."""
    steps = torch.diff(w.detach().to(torch.float64), dim=0).abs_()
    return float((steps.sum(dim=0) / m).sum())


def weight_alignment_error(
    mapped_custom: torch.Tensor, ste: torch.Tensor, m: float | torch.Tensor
) -> float:
    """The paper's alignment error: final ``Σ_i |M(w_Q̂) - w_STE|_i / m_i`` over ``path_length(ste)``.

    ``mapped_custom`` is the custom-estimator run's latent trajectory already mapped by ``M``,
    ``ste`` the STE run's, both ``T × N``. The numerator is taken at the final step (last row):
    how far apart the runs end up; the denominator, how far the STE run moved over all recorded
    steps, makes the error a fraction of the motion (0: aligned; about 1 or more: unrelated).
    Only ``mapped_custom``'s last row enters; it is taken whole so both runs are given alike.
    If the STE run did not move the error is 0 when the runs end equal, else ``inf``.
    """
    return _alignment_error(mapped_custom, ste, m, ("mapped_custom", "ste"))


def _alignment_error(
    mapped: object, ste: object, m: object, names: tuple[str, str], final_only: bool = False
) -> float:
    """``weight_alignment_error``, with errors naming the caller's arguments. ``final_only``:
    ``mapped`` may also be its last row alone (1 × N), the only one the error reads."""
    a = _check_tensor(mapped, names[0], "float", dim=2, finite=False)
    b = _check_tensor(ste, names[1], "float", dim=2, finite=False)
    if not (final_only and a.shape == (1, b.shape[1])):
        _check_same_shape(a, b, *names)
    m = _check_m(m, b.shape[1])
    final_a, final_b = (x[-1].detach().to(torch.float64) for x in (a, b))
    distance = float(((final_a - final_b).abs() / m).sum())
    if not math.isfinite(distance):
        raise ValueError(f"{names[0]} and {names[1]} must be finite at the final step")
    travelled = _travelled(b, m)
    if not math.isfinite(travelled):
        raise ValueError(f"{names[1]} must be finite (no NaN or inf)")
    if travelled == 0.0:
        return 0.0 if distance == 0.0 else math.inf
    return distance / travelled


# --- change points ---------------------------------------------------------------------------


def change_point_agreement(levels_a: torch.Tensor, levels_b: torch.Tensor) -> float:
    """Fraction of weights (columns of ``T × N`` level trajectories) whose change points coincide.

    A weight's change points are the pairs (new level, step) at each step where its level changes.
    Two runs agree on a weight when it starts on the same level in both and, at every step, either
    both change to the same new level or neither changes. Equal initial levels are required: equal
    change points from different starting levels are different trajectories. Together these say
    exactly that the weight's whole level trajectory is the same in both runs, which is how it is
    computed.
    """
    a, b = _check_levels(levels_a, levels_b, dim=2)
    return float((a == b).all(dim=0).double().mean())


def _compressed_paths(levels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every weight's compressed level sequence, concatenated: (levels, column of each entry).

    Run-length encode each column (the distinct consecutive levels it visits, steps dropped), then
    drop every level equal to the one two places before it in that sequence. Entries come
    column by column, in the order visited.
    """
    by_weight = np.ascontiguousarray(levels.detach().cpu().numpy().T)  # N × T, weight by weight
    starts_run = np.ones(by_weight.shape, dtype=bool)
    np.not_equal(by_weight[:, 1:], by_weight[:, :-1], out=starts_run[:, 1:])
    visited = by_weight[starts_run]  # row-major: weight by weight, in step order
    column = np.repeat(np.arange(by_weight.shape[0]), starts_run.sum(axis=1))
    keep = np.ones(visited.shape, dtype=bool)
    keep[2:] = (visited[2:] != visited[:-2]) | (column[2:] != column[:-2])
    return visited[keep], column[keep]


def compressed_change_point_agreement(levels_a: torch.Tensor, levels_b: torch.Tensor) -> float:
    """Change-point agreement after collapsing oscillations: fraction of weights whose paths match.

    Each weight's path is the sequence of distinct consecutive levels it visits (when it moved is
    ignored). Oscillation is then collapsed: a level equal to the one two places before it (the
    weight returning to the level it just left) is dropped, so a back-and-forth ``A→B→A→B…``
    between two levels leaves the single ``A→B``, wherever it stops; the next new level ``C``
    follows ``B`` (``A→B→A→C`` reads ``A→B→C``). Two runs agree on a weight when its collapsed
    paths are equal, the initial level included. Vectorised with numpy: no loop over weights.
    """
    a, b = _check_levels(levels_a, levels_b, dim=2)
    n = a.shape[1]
    path_a, column_a = _compressed_paths(a)
    path_b, column_b = _compressed_paths(b)
    lengths_a = np.bincount(column_a, minlength=n)
    lengths_b = np.bincount(column_b, minlength=n)
    same_length = lengths_a == lengths_b
    # Columns of equal length line up entry for entry once the others are removed.
    in_a, in_b = same_length[column_a], same_length[column_b]
    differs = path_a[in_a] != path_b[in_b]
    agree = same_length.copy()
    agree[column_a[in_a][differs]] = False
    return float(agree.mean())


# --- outputs ---------------------------------------------------------------------------------


def _check_logits(logits_a: object, logits_b: object) -> tuple[torch.Tensor, torch.Tensor]:
    layout = "2-dimensional (examples × classes)"
    a = _check_tensor(logits_a, "logits_a", "float", dim=2, layout=layout).detach()
    b = _check_tensor(logits_b, "logits_b", "float", dim=2, layout=layout).detach()
    _check_same_shape(a, b, "logits_a", "logits_b")
    return a.to(torch.float64), b.to(torch.float64)


def prediction_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of examples (rows of ``examples × classes`` logits) with the same predicted class.

    Ties go to the first maximal class, in both runs alike.
    """
    a, b = _check_logits(logits_a, logits_b)
    return float((a.argmax(dim=1) == b.argmax(dim=1)).double().mean())


def logit_mse(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean squared difference of two ``examples × classes`` logit tensors, over all entries."""
    a, b = _check_logits(logits_a, logits_b)
    return float(((a - b) ** 2).mean())


def _check_losses(losses: object, name: str) -> torch.Tensor:
    if isinstance(losses, torch.Tensor):
        x = losses.detach()
    elif isinstance(losses, Sequence | np.ndarray) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in losses
    ):
        x = torch.as_tensor(np.asarray(losses, dtype=np.float64))
    else:
        raise ValueError(f"{name} must be a 1-D tensor or a sequence of floats")
    x = _check_tensor(x.to(torch.float64) if x.is_floating_point() else x, name, "float", dim=1)
    if len(x) < 2:
        raise ValueError(f"{name} must have at least 2 values, got {len(x)}")
    return x.to(torch.float64)


def loss_correlation(
    losses_a: torch.Tensor | Sequence[float], losses_b: torch.Tensor | Sequence[float]
) -> float:
    """Pearson correlation of two loss curves of equal length (at least 2 steps).

    Undefined when either curve is constant; then ``nan`` is returned (not an error), so a
    degenerate curve does not stop ``compare_runs`` from reporting the other metrics.
    """
    a, b = _check_losses(losses_a, "losses_a"), _check_losses(losses_b, "losses_b")
    _check_same_shape(a, b, "losses_a", "losses_b")
    if bool((a == a[0]).all()) or bool((b == b[0]).all()):
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    da, db = da / da.abs().max(), db / db.abs().max()  # scale-free; no underflow in the squares
    r = float((da * db).sum() / torch.sqrt((da * da).sum() * (db * db).sum()))
    return min(1.0, max(-1.0, r))


# --- all together ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """Every agreement metric for one pair of runs (``a``: custom estimator, ``b``: STE)."""

    quantized_weight_agreement: float
    alignment_error: float
    change_point_agreement: float
    compressed_change_point_agreement: float
    prediction_agreement: float
    logit_mse: float
    loss_correlation: float

    def to_dict(self) -> dict[str, float]:
        """The metrics by name, rounded to 6 decimals (``nan`` and ``inf`` kept as they are)."""
        return {k: round(v, 6) if math.isfinite(v) else v for k, v in asdict(self).items()}


def compare_runs(
    levels_a: torch.Tensor,
    levels_b: torch.Tensor,
    mapped_a: torch.Tensor,
    weights_b: torch.Tensor,
    m: float | torch.Tensor,
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    losses_a: torch.Tensor | Sequence[float],
    losses_b: torch.Tensor | Sequence[float],
) -> Agreement:
    """All metrics for two runs: ``T × N`` level trajectories, latent trajectories (run ``a``'s
    mapped by ``M``), the range ``m``, test logits and loss curves.

    The quantized-weight agreement is taken at the final step (last row of the levels). Of
    ``mapped_a`` the alignment error reads the last row only, so it may be that row alone (1 × N):
    a long run need not be mapped by ``M`` at every step for it.
    """
    a, b = _check_levels(levels_a, levels_b, dim=2)
    names = ("mapped_a", "weights_b")
    return Agreement(
        quantized_weight_agreement=quantized_weight_agreement(a[-1], b[-1]),
        alignment_error=_alignment_error(mapped_a, weights_b, m, names, final_only=True),
        change_point_agreement=change_point_agreement(a, b),
        compressed_change_point_agreement=compressed_change_point_agreement(a, b),
        prediction_agreement=prediction_agreement(logits_a, logits_b),
        logit_mse=logit_mse(logits_a, logits_b),
        loss_correlation=loss_correlation(losses_a, losses_b),
    )


# --- the authors' definitions ----------------------------------------------------------------
# The paper's experiment code (GitHub mschoenb97/flax, examples/mnist/run_experiments.py and
# matts_imports.py) measures some agreements differently from the functions above. Those that
# differ are defined again below, named after the authors' terms; the course reports both.


def _change_point_runs(levels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every weight's change points, concatenated: (level, step, column) of each entry.

    A weight's first entry is its initial level at step 0; then one entry (new level, step) per
    step at which its level changes. Entries come column by column, in step order.
    """
    by_weight = np.ascontiguousarray(levels.detach().cpu().numpy().T)  # N × T
    changes = np.ones(by_weight.shape, dtype=bool)
    np.not_equal(by_weight[:, 1:], by_weight[:, :-1], out=changes[:, 1:])
    column, step = np.nonzero(changes)  # row-major: weight by weight, steps in order
    return by_weight[changes].astype(np.int64), step.astype(np.int64), column.astype(np.int64)


def collapse_oscillations(
    levels: Sequence[int], steps: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The authors' compression of one weight's change points (``remove_elements_dataframe``).

    Entries are pushed on a stack; while its top four read ``A, B, A, B`` the middle two are
    removed, leaving ``A, B`` (the ``B`` keeps the step of the last ``B``). So only complete
    back-and-forth runs collapse: ``A→B→A`` stays as it is (ours, ``compressed_change_point_agreement``,
    reads it ``A→B``), ``A→B→A→B→A`` becomes ``A→B→A``. Source: mschoenb97/flax,
    examples/mnist/run_experiments.py.
    """
    kept_levels, kept_steps, _ = oscillation_counts(levels, steps)
    return kept_levels, kept_steps


def oscillation_counts(
    levels: Sequence[int], steps: Sequence[int]
) -> tuple[list[int], list[int], list[int]]:
    """``collapse_oscillations`` with the authors' oscillation count of every entry it keeps.

    Each collapse of ``A, B, A, B`` into ``A, B`` adds one to the count of that first ``A``; the
    ``B`` left after it starts again from 0. So a weight that goes ``A→B`` and back ``n`` more
    times keeps ``A`` with count ``n``. These counts are what the authors' ``total_q_oscillation``,
    ``total_i_oscillation`` and ``average_oscillation_error`` add up
    (mschoenb97/flax, examples/mnist/run_experiments.py, ``remove_elements_dataframe``).
    """
    if len(levels) != len(steps):
        raise ValueError(
            f"levels and steps must have the same length, got {len(levels)} and {len(steps)}"
        )
    kept_levels: list[int] = []
    kept_steps: list[int] = []
    counts: list[int] = []
    for level, step in zip(levels, steps, strict=True):
        kept_levels.append(level)
        kept_steps.append(step)
        counts.append(0)
        while (
            len(kept_levels) >= 4
            and kept_levels[-1] == kept_levels[-3]
            and kept_levels[-2] == kept_levels[-4]
        ):
            counts[-4] += 1
            last_step = kept_steps[-1]
            del kept_levels[-2:], kept_steps[-2:], counts[-2:]
            kept_steps[-1], counts[-1] = last_step, 0
    return kept_levels, kept_steps, counts


@dataclass(frozen=True)
class ChangePointResult:
    """The authors' change-point comparison: the fraction of weights whose sequences agree, and the
    mean step error per change point over those weights (``nan`` when they have no change point)."""

    agreement: float
    step_error: float


@dataclass(frozen=True)
class CompressedChangePointResult(ChangePointResult):
    """The compressed comparison adds the authors' oscillation metrics, over the weights whose
    compressed sequences agree: each run's total oscillation count (``oscillations_a``: their
    ``total_q_oscillation``, the custom-estimator run; ``oscillations_b``: ``total_i_oscillation``,
    the other run), and ``Σ|count_a − count_b|`` entry by entry per change point
    (``average_oscillation_error``; ``nan`` when those weights have no change point)."""

    oscillations_a: int
    oscillations_b: int
    oscillation_error: float


#: (level, step, column) of every entry of every weight's sequence, column by column
_Entries = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Agreeing(NamedTuple):
    result: ChangePointResult
    in_a: np.ndarray  # entries of run a's weights that agree
    in_b: np.ndarray
    change_points: int  # over the weights that agree


def _sequence_agreement(paths_a: _Entries, paths_b: _Entries, n: int) -> _Agreeing:
    """Which weights' (level, step) sequences agree (same length, the same levels): the share of
    them, their step error per change point, which entries of ``paths_a`` and of ``paths_b``
    belong to them (they line up entry for entry), and how many change points they have."""
    (level_a, step_a, column_a), (level_b, step_b, column_b) = paths_a, paths_b
    lengths_a = np.bincount(column_a, minlength=n)
    lengths_b = np.bincount(column_b, minlength=n)
    agree = lengths_a == lengths_b
    in_a, in_b = agree[column_a], agree[column_b]  # equal-length columns line up entry for entry
    differs = level_a[in_a] != level_b[in_b]
    agree[column_a[in_a][differs]] = False
    in_a, in_b = agree[column_a], agree[column_b]
    step_error = np.abs(step_a[in_a] - step_b[in_b]).sum()
    change_points = int(in_a.sum() - agree.sum())  # a weight's first entry is no change
    result = ChangePointResult(float(agree.mean()), _per_change(float(step_error), change_points))
    return _Agreeing(result, in_a, in_b, change_points)


def _per_change(total: float, change_points: int) -> float:
    return total / change_points if change_points else math.nan


def authors_change_point_agreement(
    levels_a: torch.Tensor, levels_b: torch.Tensor
) -> ChangePointResult:
    """The authors' exact change-point agreement (``exact_correct_sequences_proportion``) and step
    error (``average_exact_step_count_error``), from ``T × N`` level trajectories.

    A weight's sequence is its initial level, then (new level, step) at each level change. Two runs
    agree on a weight when the sequences have the same length and the levels are within min Δ (for
    one weight in both runs: the same level index). Unlike ours (``change_point_agreement``) the
    steps need not match: a change one step later still agrees, and the step error reports
    ``Σ|step_a − step_b|`` over the agreeing weights' change points, per change point.
    Source: mschoenb97/flax, examples/mnist/run_experiments.py (``compare_change_point_data``).
    """
    a, b = _check_levels(levels_a, levels_b, dim=2)
    return _sequence_agreement(_change_point_runs(a), _change_point_runs(b), a.shape[1]).result


def _collapsed_runs(entries: _Entries, n: int) -> tuple[_Entries, np.ndarray]:
    """The change points of ``n`` weights (``_change_point_runs``) with each weight's sequence
    passed through ``oscillation_counts``, and the oscillation count of every entry kept.

    Only weights with four or more entries can hold an ``A,B,A,B`` run; only those are looped over.
    """
    level, step, column = entries
    lengths = np.bincount(column, minlength=n)
    long = lengths[column] >= 4
    short = ~long
    parts = [(level[short], step[short], column[short], np.zeros(int(short.sum()), np.int64))]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for col in np.flatnonzero(lengths >= 4):
        lo, hi = starts[col], starts[col + 1]
        kept = oscillation_counts(level[lo:hi].tolist(), step[lo:hi].tolist())
        parts.append(
            (
                np.asarray(kept[0], dtype=np.int64),
                np.asarray(kept[1], dtype=np.int64),
                np.full(len(kept[0]), col, dtype=np.int64),
                np.asarray(kept[2], dtype=np.int64),
            )
        )
    level, step, column, count = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.argsort(column, kind="stable")  # back to column by column, each in step order
    return (level[order], step[order], column[order]), count[order]


def authors_compressed_change_point_agreement(
    levels_a: torch.Tensor, levels_b: torch.Tensor
) -> CompressedChangePointResult:
    """The authors' compressed change-point agreement (``correct_sequences_proportion``), step
    error (``average_step_count_error``) and oscillation metrics (``total_q_oscillation``,
    ``total_i_oscillation``, ``average_oscillation_error``): ``authors_change_point_agreement``
    after each weight's sequence is passed through ``collapse_oscillations`` (only complete
    ``A,B,A,B`` runs collapse), the oscillations counted by ``oscillation_counts``.

    The oscillation totals count only the weights whose compressed sequences agree, as the
    authors' do: a weight that oscillates in one run and not in the other disagrees, and adds
    nothing. Source: mschoenb97/flax, examples/mnist/run_experiments.py
    (``compare_change_point_data``, ``get_change_point_results``).
    """
    a, b = _check_levels(levels_a, levels_b, dim=2)
    return _compressed_agreement(_change_point_runs(a), _change_point_runs(b), a.shape[1])


def _compressed_agreement(
    entries_a: _Entries, entries_b: _Entries, n: int
) -> CompressedChangePointResult:
    """``authors_compressed_change_point_agreement`` from both runs' change points."""
    runs_a, count_a = _collapsed_runs(entries_a, n)
    runs_b, count_b = _collapsed_runs(entries_b, n)
    agreeing = _sequence_agreement(runs_a, runs_b, n)
    count_a, count_b = count_a[agreeing.in_a], count_b[agreeing.in_b]
    error = int(np.abs(count_a - count_b).sum())
    return CompressedChangePointResult(
        agreeing.result.agreement,
        agreeing.result.step_error,
        oscillations_a=int(count_a.sum()),
        oscillations_b=int(count_b.sum()),
        oscillation_error=_per_change(error, agreeing.change_points),
    )


def wrong_prediction_agreement(
    logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor
) -> float:
    """Among test examples both runs get wrong, the fraction where they predict the same class
    (the authors' ``incorrect_inference_agreement_proportion``; ``nan`` if no example is wrong in both).
    Source: mschoenb97/flax, examples/mnist/run_experiments.py (``get_inference_results``).
    """
    a, b = _check_logits(logits_a, logits_b)
    if not isinstance(labels, torch.Tensor) or labels.shape != (a.shape[0],):
        raise ValueError(
            f"labels must be a tensor of shape ({a.shape[0]},) (one class per example)"
        )
    pred_a, pred_b = a.argmax(dim=1), b.argmax(dim=1)
    both_wrong = (pred_a != labels) & (pred_b != labels)
    if not bool(both_wrong.any()):
        return math.nan
    return float((pred_a == pred_b)[both_wrong].double().mean())


def mean_logit_difference(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean absolute difference of two ``examples × classes`` logit tensors, over all entries (the
    authors' ``avg_logit_difference``). Source: mschoenb97/flax, examples/mnist/run_experiments.py."""
    a, b = _check_logits(logits_a, logits_b)
    return float((a - b).abs().mean())


def history_correlation(history_a: Sequence[float], history_b: Sequence[float]) -> float:
    """Pearson correlation of two per-epoch curves (the authors' ``loss_correlation``,
    ``val_loss_correlation``, ``val_accuracy_correlation``, one value per epoch; ``nan`` with
    fewer than 2 epochs or a constant curve). Ours, ``loss_correlation``, correlates per-step train
    losses. Source: mschoenb97/flax, examples/mnist/run_experiments.py (``plot_data``).
    """
    if len(history_a) < 2:
        return math.nan
    return loss_correlation(history_a, history_b)


@dataclass(frozen=True)
class History:
    """Per-epoch curves as the authors record them: mean train loss over the epoch's batches, and
    test ("validation") loss and accuracy after the epoch (mschoenb97/flax, examples/mnist/train.py)."""

    loss: list[float]
    val_loss: list[float]
    val_accuracy: list[float]


def authors_metrics(
    levels_a: torch.Tensor,
    levels_b: torch.Tensor,
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    history_a: History,
    history_b: History,
) -> dict[str, float]:
    """The authors' metrics of ``run_analysis_for_one``, keyed by their names (mschoenb97/flax,
    examples/mnist/run_experiments.py). Their ``quantized_agreements`` and ``distance_metric`` are
    computed as ours are (``quantized_weight_agreement``, ``alignment_error``) and left to ours;
    ``inference_agreement_proportion`` and ``logit_mse`` are theirs too, equal to
    ``prediction_agreement`` and ``logit_mse`` here."""
    a, b = _check_levels(levels_a, levels_b, dim=2)
    entries_a, entries_b = _change_point_runs(a), _change_point_runs(b)  # found once, read twice
    exact = _sequence_agreement(entries_a, entries_b, a.shape[1]).result
    compressed = _compressed_agreement(entries_a, entries_b, a.shape[1])
    return {
        "exact_correct_sequences_proportion": exact.agreement,
        "average_exact_step_count_error": exact.step_error,
        "correct_sequences_proportion": compressed.agreement,
        "average_step_count_error": compressed.step_error,
        "total_q_oscillation": float(compressed.oscillations_a),
        "total_i_oscillation": float(compressed.oscillations_b),
        "average_oscillation_error": compressed.oscillation_error,
        "inference_agreement_proportion": prediction_agreement(logits_a, logits_b),
        "incorrect_inference_agreement_proportion": wrong_prediction_agreement(
            logits_a, logits_b, labels
        ),
        "logit_mse": logit_mse(logits_a, logits_b),
        "avg_logit_difference": mean_logit_difference(logits_a, logits_b),
        "loss_correlation": history_correlation(history_a.loss, history_b.loss),
        "val_loss_correlation": history_correlation(history_a.val_loss, history_b.val_loss),
        "val_accuracy_correlation": history_correlation(
            history_a.val_accuracy, history_b.val_accuracy
        ),
    }
