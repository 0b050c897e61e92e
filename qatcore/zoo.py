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
    module, attribute = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


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
