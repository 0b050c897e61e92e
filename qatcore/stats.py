"""Mean ± standard deviation of a trained number over seeds, and the margin a claim keeps.

A trained number changes with the seed and, in its low digits, with the CPU that computes it; a
claim about it is honest when it holds for the mean by more than the mean's own uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanSd:
    """``mean`` and sample standard deviation ``sd`` of ``n`` values (one per seed)."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanSd:
        """The mean and sample sd (n − 1 in the denominator; 0 for a single value)."""
        values = [float(v) for v in values]
        if not values:
            raise ValueError("values must hold at least one number, got none")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"values must be finite numbers, got {values}")
        n = len(values)
        mean = math.fsum(values) / n
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(mean, sd, n)

    @property
    def standard_error(self) -> float:
        """sd / √n: how far the mean of n seeds itself moves from one set of seeds to the next."""
        return self.sd / math.sqrt(self.n)

    def lower(self, errors: float = 2.0) -> float:
        """mean − ``errors`` standard errors: the claim ``mean ≥ bar`` is kept with margin when this is."""
        return self.mean - errors * self.standard_error

    def upper(self, errors: float = 2.0) -> float:
        """mean + ``errors`` standard errors."""
        return self.mean + errors * self.standard_error

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.sd:.2f} (sd, n = {self.n})"
