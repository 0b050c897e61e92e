"""Argument checks shared by the package: a clear ValueError naming the argument and what is allowed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def int_at_least(name: str, value: object, lowest: int) -> int:
    """``value`` as an int if it is one (not a bool) and ``>= lowest``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
        raise ValueError(f"{name} must be an int >= {lowest}, got {value!r}")
    return int(value)


def positive_number(name: str, value: object) -> float:
    """``value`` as a float if it is a finite real number ``> 0`` (not a bool)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """``value`` if it is one of ``allowed``, else a ValueError naming ``name`` and the choices.

    Every "must be one of" of the package goes through here, so the message reads the same everywhere.
    """
    choices = tuple(allowed)
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
