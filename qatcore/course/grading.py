"""Helpers for the graded exercises: a reference kept out of reach while a test runs, and a student's
function that later cells use, falling back to the reference while it is still a stub.

``unreachable("qatcore.quantizers.uniform_quantize")`` is a context manager: for its duration every
reference to that object in qatcore's modules and in the caller's namespace (the notebook), or the
attribute of a class for a method such as ``"qatcore.cost.cost_models.ACEv2.cost"``, raises. A test
that calls the student's function inside it fails when the answer only delegates to the package.

``yours_or_reference(my_quantize, uniform_quantize)`` returns a function that calls the student's
``my_quantize`` and, while that still raises ``NotImplementedError``, says so once and calls the
reference instead, so the cells after an exercise run before it is solved.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["ReferenceUnavailable", "resolve_name", "unreachable", "yours_or_reference"]


_MISSING = object()


class ReferenceUnavailable(RuntimeError):
    """Raised by a reference that a graded test has made unreachable."""


def resolve_name(name: str) -> tuple[Any, str, Any]:
    """``(owner, attribute, object)`` for a dotted ``qatcore.…`` name: the longest importable module
    prefix, then attributes (a class's method has the class as its owner)."""
    if not isinstance(name, str) or not name.startswith("qatcore."):
        raise ValueError(f"name must be a dotted 'qatcore.…' name, got {name!r}")
    parts = name.split(".")
    try:  # a module itself
        module = importlib.import_module(name)
        return importlib.import_module(".".join(parts[:-1])), parts[-1], module
    except ImportError:
        pass
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:-1]:
            owner = getattr(owner, attribute)
        if not hasattr(owner, parts[-1]):
            raise ValueError(f"{name!r} does not exist")
        return owner, parts[-1], getattr(owner, parts[-1])
    raise ValueError(f"no module of {name!r} imports")


def _raiser(name: str) -> Callable[..., Any]:
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise ReferenceUnavailable(
            f"{name} is what this exercise asks you to write: it is unavailable while your answer is "
            "graded"
        )

    return unavailable


class unreachable:  # lower case: used as a context manager, like contextlib's
    """Within ``with unreachable(name, …):`` each named qatcore object raises ``ReferenceUnavailable``."""

    def __init__(self, *names: str, namespace: dict[str, Any] | None = None) -> None:
        if not names:
            raise ValueError("name at least one qatcore object")
        self._names = names
        self._namespace = sys._getframe(1).f_globals if namespace is None else namespace
        self._undo: list[tuple[Any, str, Any, bool]] = []

    def _patch(self, holder: Any, attribute: str, replacement: Any) -> None:
        if isinstance(holder, dict):
            self._undo.append((holder, attribute, holder[attribute], True))
            holder[attribute] = replacement
        else:
            self._undo.append((holder, attribute, holder.__dict__.get(attribute, _MISSING), False))
            setattr(holder, attribute, replacement)

    def __enter__(self) -> unreachable:
        for name in self._names:
            owner, attribute, target = resolve_name(name)
            replacement: Any = _raiser(name)  # or a property of it, below
            if isinstance(owner, type):
                if isinstance(owner.__dict__.get(attribute), property):
                    replacement = property(replacement)
                self._patch(owner, attribute, replacement)
                continue
            holders = [
                module.__dict__
                for module_name, module in list(sys.modules.items())
                if module_name.split(".")[0] == "qatcore" and module is not None
            ]
            holders.append(self._namespace)
            for holder in holders:
                for key, value in list(holder.items()):
                    if value is target:
                        self._patch(holder, key, replacement)
        return self

    def __exit__(self, *exc: object) -> None:
        for holder, attribute, original, is_dict in reversed(self._undo):
            if is_dict:
                holder[attribute] = original
            elif original is _MISSING:
                delattr(holder, attribute)
            else:
                setattr(holder, attribute, original)
        self._undo.clear()


def yours_or_reference(
    yours: Callable[..., Any], reference: Callable[..., Any], name: str | None = None
) -> Callable[..., Any]:
    """``yours`` while it works; the reference (with a note, once) while ``yours`` is still a stub.
    ``name`` says what the reference is where its own name would not (a lambda)."""
    noted = False
    called = name or f"{reference.__module__}.{reference.__qualname__}"

    @functools.wraps(yours)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal noted
        try:
            return yours(*args, **kwargs)
        except NotImplementedError:
            if not noted:
                print(
                    f"note: {yours.__name__} is not written yet; the cells below use {called} until it is."
                )
                noted = True
            return reference(*args, **kwargs)

    return call
