"""The built-in models by name, so the CLI, checkpoints and notebooks can rebuild any of them.

Each entry is ``"module:factory"``, imported on first use, so naming a model never imports the
code of all the others. A factory takes keyword arguments (bit widths, image size, classes …)
and returns an ``nn.Module``.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

MODELS: dict[str, str] = {
    "mnist_cnn": "qatcore.models:MNISTCNN",
}


def names() -> list[str]:
    """The names ``build`` accepts, sorted."""
    return sorted(MODELS)


def factory(name: str):
    """The callable that builds the model called ``name``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {names()}, got {name!r}")
    module, attribute = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def build(name: str, **kwargs: Any) -> nn.Module:
    """A fresh model called ``name``, built with ``kwargs``."""
    return factory(name)(**kwargs)
