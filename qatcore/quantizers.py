"""Forward quantizers: the paper's uniform b-bit weight quantizer and sign.

The uniform quantizer of *Custom Gradient Estimators are STEs in Disguise*: per layer a range
``m`` (by default the He-uniform limit ``sqrt(6 / fan_in)``), ``2**bits`` levels evenly spaced
on ``[-m, m]`` with step ``Δ = 2m / (2**bits - 1)``, none of them at 0.

A *bin* is the interval between two neighbouring levels, ``[-m + iΔ, -m + (i+1)Δ]`` for
``i = 0 … 2**bits - 2``; its centre is a rounding threshold. Estimators (``qatcore.estimators``)
are periodic over these bins.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from qatcore.checks import int_at_least, positive_number

MAX_BITS = 16


def check_bits(bits: object) -> int:
    """Return ``bits`` if it is an int in [1, 16], else raise a ValueError naming it."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise ValueError(f"bits must be an int from 1 to {MAX_BITS}, got {bits!r}")
    if not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be an int from 1 to {MAX_BITS}, got {bits!r}")
    return int(bits)


#: the smallest range ``m`` accepted: float32's smallest normal number. Below it the level spacing
#: is subnormal or zero in float32 and ``(w + m) / Δ`` is no longer a count of steps (0/0 is NaN)
MIN_RANGE = float(torch.finfo(torch.float32).tiny)

#: the largest width each floating-point input dtype can quantize in its own precision: its
#: significand bits (beyond them neighbouring levels round to the same number, or ``m`` to inf)
HALF_MAX_BITS = {torch.float16: 11, torch.bfloat16: 8}


def check_range(m: object) -> float:
    """Return the quantizer range ``m`` as a float if it is finite, positive and a normal float32 number
    (at least ``MIN_RANGE``)."""
    m = positive_number("m (the quantizer range)", m)
    if m < MIN_RANGE:
        raise ValueError(
            f"m (the quantizer range) must be at least {MIN_RANGE:.4g} (float32's smallest normal "
            f"number), got {m!r}"
        )
    return m


def he_uniform_range(fan_in: int) -> float:
    """The paper's default range ``m = sqrt(6 / fan_in)``, the He-uniform initialiser's limit."""
    return math.sqrt(6.0 / int_at_least("fan_in", fan_in, 1))


def fan_in(weight: torch.Tensor) -> int:
    """Inputs feeding one output unit: ``in_features`` for a linear weight, ``C_in/groups·k_h·k_w`` for a conv."""
    if weight.dim() < 2:
        raise ValueError(f"weight must have at least 2 dimensions, got shape {tuple(weight.shape)}")
    return int(weight[0].numel())


def step_size(bits: int, m: float) -> float:
    """The level spacing ``Δ = 2m / (2**bits - 1)``."""
    return 2.0 * check_range(m) / (2 ** check_bits(bits) - 1)


def levels(bits: int, m: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The ``2**bits`` quantization levels ``-m + iΔ``."""
    bits, m = check_bits(bits), check_range(m)
    return -m + step_size(bits, m) * torch.arange(2**bits, dtype=dtype)


def thresholds(bits: int, m: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The ``2**bits - 1`` rounding thresholds, half-way between levels (the bin centres)."""
    return bin_centre(torch.arange(2 ** check_bits(bits) - 1, dtype=dtype), bits, m)


def uniform_quantize(w: torch.Tensor, bits: int, m: float) -> torch.Tensor:
    """``Q(w) = Δ·round((clip(w, -m, m) + m) / Δ) - m`` (forward only; no gradient defined).

    NaN stays NaN and ±inf take the end levels. The bottom level is ``-m`` exactly; the top,
    ``Δ·(2**bits - 1) - m`` in float32, can be an ulp or two from ``m``. float16 and bfloat16
    inputs are quantized in float32 and the levels rounded to their dtype once; widths their
    significand cannot hold (``HALF_MAX_BITS``) are refused.
    """
    bits, m = check_bits(bits), check_range(m)
    delta = step_size(bits, m)
    if isinstance(w, torch.Tensor) and w.dtype in HALF_MAX_BITS:
        if bits > HALF_MAX_BITS[w.dtype]:
            raise ValueError(
                f"bits must be at most {HALF_MAX_BITS[w.dtype]} for {w.dtype} input (its significand "
                f"holds no more distinct levels), got {bits}; quantize w.float() instead"
            )
        return quantize_values(w.float(), m, delta).to(w.dtype)
    return quantize_values(w, m, delta)


def quantize_values(w, m: float, delta: float):
    """``Q(w)`` for a tensor or a NumPy array, ``m`` and ``Δ`` already checked: the per-step path
    of a bound estimator and of the NumPy simulations."""
    if isinstance(w, torch.Tensor):
        return delta * torch.round((torch.clamp(w, -m, m) + m) / delta) - m
    # np.minimum/np.maximum and np.rint give np.clip's and np.round's values at half their call cost
    return delta * np.rint((np.minimum(np.maximum(w, -m), m) + m) / delta) - m


def bin_index(w: torch.Tensor, bits: int, m: float) -> torch.Tensor:
    """Index ``i`` of the bin ``[-m + iΔ, -m + (i+1)Δ]`` holding ``w`` (clamped to the range)."""
    bits, m = check_bits(bits), check_range(m)
    delta = step_size(bits, m)
    return torch.clamp(torch.floor((w + m) / delta), 0, 2**bits - 2)


def bin_centre(index: torch.Tensor, bits: int, m: float) -> torch.Tensor:
    """Centre ``-m + (i + ½)Δ`` of bin ``i``: the rounding threshold inside it."""
    return -check_range(m) + (index + 0.5) * step_size(bits, m)


def sign(x: torch.Tensor) -> torch.Tensor:
    """Binary sign with ``sign(0) = sign(−0) = +1``, so every value maps to one of two levels; a NaN
    gives its sign bit (``float("nan")`` +1, ``-float("nan")`` −1), as ``qatcore.bnn.functions.sign``:
    one meaning of ``sign`` in the whole package. ``copysign(1, x + 0)``: adding ``+0`` turns ``−0`` into ``+0``."""
    return torch.copysign(torch.ones_like(x), x + 0.0)
