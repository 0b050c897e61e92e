"""The built-in models by name, so the CLI, checkpoints and notebooks can rebuild any of them.

Each entry is ``"module:factory"``, imported on first use, so naming a model never imports the
code of all the others. A factory takes keyword arguments (bit widths, image size, classes …)
and returns an ``nn.Module``.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from qatcore.checks import check_choice

MODELS: dict[str, str] = {
    "mnist_cnn": "qatcore.estimators.models:MNISTCNN",
    "bnn_mlp": "qatcore.bnn.models:BNNMLP",
    "cnv": "qatcore.bnn.models:CNV",
    "binarynet": "qatcore.bnn.models:BinaryNet",
    "resnete18": "qatcore.bnn.models:ResNetE18",
    "mobilenet_v1": "qatcore.architectures:MobileNetV1",
    "resnet18": "qatcore.architectures:ResNet18",
    "resnet50": "qatcore.architectures:ResNet50",
    "pikelpn_mobilenet": "qatcore.cost.pikelpn:pikelpn_mobilenet",
}

#: input shape (without the batch) of models that do not carry an ``input_shape`` themselves
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"mnist_cnn": (1, 28, 28)}


def names() -> list[str]:
    """The names ``build`` accepts, sorted."""
    return sorted(MODELS)


def factory(name: str):
    """The callable that builds the model called ``name``."""
    check_choice("model", name, names())
    return _imported(MODELS[name])


def _imported(spec: str):
    """The attribute named by ``"package.module:attribute"``."""
    module, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"model {spec!r}: cannot import {attribute!r} from {module!r} ({error})"
        ) from None


def build(name: str, **kwargs: Any) -> nn.Module:
    """A fresh model called ``name``, built with ``kwargs``."""
    return factory(name)(**kwargs)


def input_shape(name: str, model: nn.Module) -> tuple[int, ...]:
    """The input shape (without the batch) of ``model``, built as ``name`` with default arguments."""
    shape = getattr(model, "input_shape", None) or INPUT_SHAPES.get(name)
    if shape is None:
        raise ValueError(
            f"model {name!r} has no input_shape attribute and no entry in zoo.INPUT_SHAPES"
        )
    return tuple(shape)


def load(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A model with default arguments and its input shape (no batch), from a zoo name or from a
    user's ``"package.module:factory"`` (called with no arguments; the model gives its shape by
    ``example_input()`` or ``input_shape``)."""
    if ":" not in spec:
        model = build(spec)
        return model, input_shape(spec, model)
    model = _imported(spec)()
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model {spec!r}: the factory returned a {type(model).__name__}, not an nn.Module"
        )
    from qatcore.cost.ace import example_input

    return model, tuple(example_input(model).shape[1:])
