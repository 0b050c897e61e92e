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


def check_device(name: str, value: object, allow_auto: bool = False) -> str:
    """``value`` if it names a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``;
    ``auto`` when allowed), else a ValueError naming ``name``: a typo or a missing GPU is found
    before any work starts, not at the first tensor moved."""
    import torch

    kinds = ("auto", "cpu", "cuda", "mps") if allow_auto else ("cpu", "cuda", "mps")
    if not isinstance(value, str) or (value != "auto" or not allow_auto) and not _is_device(value):
        raise ValueError(
            f"{name} must be a torch device name, one of {kinds} (or cuda:N), got {value!r}"
        )
    kind = value.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {value!r} asked for, but torch sees no GPU (CUDA); use 'cpu'")
    if kind == "cuda" and ":" in value and int(value.split(":")[1]) >= torch.cuda.device_count():
        raise ValueError(f"{name} {value!r}: torch sees {torch.cuda.device_count()} GPU(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} 'mps' asked for, but torch sees no Apple GPU; use 'cpu'")
    return value


def _is_device(value: str) -> bool:
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return False
    return True


def optional_text(name: str, value: object) -> str | None:
    """``value`` if it is None or a non-empty str (a path given in a config file), else a TypeError."""
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{name} must be a non-empty string (a folder path), got {value!r}")
    return value
