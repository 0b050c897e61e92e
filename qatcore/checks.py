"""Argument checks shared by the package: a clear ValueError naming the argument and what is allowed."""

from __future__ import annotations

import math
import numbers


def int_at_least(name: str, value: object, lowest: int) -> int:
    """``value`` as an int if it is one (not a bool) and ``>= lowest``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
        raise ValueError(f"{name} must be an int >= {lowest}, got {value!r}")
    return int(value)


def positive_number(name: str, value: object) -> float:
    """``value`` as a float if it is a finite real number ``> 0`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
