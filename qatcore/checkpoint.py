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
from qatcore.files import atomic_write

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
    atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite)
    return path


def load(path: str | os.PathLike) -> Checkpoint:
    """Rebuild the model saved at ``path`` (``torch.load(weights_only=True)``: no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for foreign objects, RuntimeError for a bad zip
        raise ValueError(f"{str(path)!r} is not a safe qatcore checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a qatcore checkpoint (expected format {FORMAT!r})")
    model = zoo.build(payload["model"], **payload["kwargs"])
    model.load_state_dict(payload["state_dict"])
    return Checkpoint(model.eval(), payload["model"], payload["kwargs"], payload.get("info", {}))
