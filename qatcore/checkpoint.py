"""Checkpoints that are safe to open: model name, plain keyword arguments and tensors, nothing else.

``save`` writes ``{"format", "model", "kwargs", "state_dict", "info"}`` with ``torch.save``;
``load`` reads it back with ``torch.load(..., weights_only=True)``, which refuses anything but
tensors and plain Python containers, so a checkpoint from elsewhere is never unpickled into
arbitrary objects. The model is rebuilt from the zoo by name (``qatcore.zoo.build``).
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qatcore import zoo
from qatcore.checks import check_choice
from qatcore.files import atomic_write, torch_save

FORMAT = "qatcore-checkpoint-1"


@dataclass
class Checkpoint:
    """A rebuilt model with the zoo name and keyword arguments it was built from."""

    model: nn.Module
    name: str
    kwargs: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


def _plain(label: str, value: Any) -> Any:
    """``value`` if it is made only of None, bool, int, float, str, lists and str-keyed dicts."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, list | tuple):
        return [_plain(label, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(label, v) for k, v in value.items()}
    name = getattr(value, "name", None)  # an estimator object is saved by its name
    if isinstance(name, str):
        return name
    raise TypeError(
        f"{label} must hold only plain values (numbers, strings, lists, dicts), "
        f"got {type(value).__name__}"
    )


def save(
    path: str | os.PathLike,
    model: nn.Module,
    name: str,
    kwargs: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (built as ``zoo.build(name, **kwargs)``) to ``path`` atomically; return the path."""
    zoo.factory(name)  # ValueError for an unknown name
    kwargs = _plain("kwargs", dict(kwargs or {}))
    payload = {
        "format": FORMAT,
        "model": name,
        "kwargs": kwargs,
        "info": _plain("info", dict(info or {})),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path's folder {str(path.parent)!r} does not exist")
    atomic_write(path, lambda tmp: torch_save(payload, tmp), overwrite)
    return path


def load(path: str | os.PathLike) -> Checkpoint:
    """Rebuild the model saved at ``path`` (``torch.load(weights_only=True)``: no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for foreign objects, RuntimeError for a bad zip
        raise ValueError(
            f"{str(path)!r} is not a safe qatcore checkpoint: {_load_problem(error)}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a qatcore checkpoint (expected format {FORMAT!r})")
    name, kwargs, state, info = _checked_fields(path, payload)
    _check_shapes(path, name, kwargs, state)
    model = zoo.build(name, **kwargs)
    model.load_state_dict(state)
    return Checkpoint(model.eval(), name, kwargs, info)


def _load_problem(error: Exception) -> str:
    """One line of what ``torch.load`` objected to (not its advice to retry with ``weights_only=False``)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _checked_fields(path: Path, payload: dict) -> tuple[str, dict, dict, dict]:
    """The checkpoint's model name, keyword arguments, tensors and info, each of the right type."""

    def wrong(problem: str) -> ValueError:
        return ValueError(f"{str(path)!r} is a damaged qatcore checkpoint: {problem}")

    name: Any = payload.get("model")
    kwargs: Any = payload.get("kwargs", {})
    state: Any = payload.get("state_dict")
    info: Any = payload.get("info", {})
    try:
        check_choice("its model", name, zoo.names())
    except ValueError as error:
        raise wrong(str(error)) from None
    for field_name, value in (("kwargs", kwargs), ("info", info), ("state_dict", state)):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong(
                f"its {field_name} must be a dict with str keys, got {type(value).__name__}"
            )
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise wrong("its state_dict must hold only tensors")
    try:
        kwargs, info = _plain("kwargs", kwargs), _plain("info", info)
    except TypeError as error:
        raise wrong(str(error)) from None
    return name, kwargs, state, info


def _check_shapes(path: Path, name: str, kwargs: dict, state: dict) -> None:
    """Build the model on the ``meta`` device (no memory) and compare its tensors' names and shapes
    with the checkpoint's, so keyword arguments that disagree with the tensors (an ``image_size`` of
    700 beside an 8×8 model's weights) are refused before anything is allocated."""
    try:
        with torch.device("meta"):
            skeleton = zoo.build(name, **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{str(path)!r}: its model {name!r} cannot be built from its kwargs {kwargs}: {error}"
        ) from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{str(path)!r} does not fit its model {name!r} {kwargs}: "
            + (
                f"missing tensors {missing[:3]}"
                if missing
                else f"unexpected tensors {unexpected[:3]}"
            )
        )
    for key, shape in expected.items():
        if found[key] != shape:
            raise ValueError(
                f"{str(path)!r} does not fit its model {name!r} {kwargs}: tensor {key!r} has shape "
                f"{found[key]}, the model's is {shape}"
            )
