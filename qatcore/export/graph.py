"""A model as a flat list of exportable operations, the one description every exporter reads.

``lower(model)`` walks ``nn.Sequential`` containers in order and turns each leaf module into an
``Op``: its kind, its name in the model, plain attributes and NumPy parameters. Quantized
weights are kept as integers: a b-bit weight ``Q(w) = Δ·code − m`` as the odd integers
``q = 2·code − (2^b − 1)`` with scale ``Δ/2`` (so ``Q(w) = (Δ/2)·q`` exactly, no zero point);
a binary weight as ``±1`` with per-output-channel scale. A module no exporter can express raises
``UnsupportedLayerError`` naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from qatcore.estimators.layers import QuantConv2d, QuantizedWeight, QuantLinear
from qatcore.quantizers import step_size


class UnsupportedLayerError(ValueError):
    """A layer of the model that the exporters cannot express."""


@dataclass(frozen=True)
class Weight:
    """A weight tensor: ``float`` (float32 values), ``uniform`` (odd integer codes, scale Δ/2, range m)
    or ``binary`` (±1 values, per-output-channel scale)."""

    kind: str
    values: np.ndarray
    bits: int = 32
    scale: np.ndarray | None = None
    m: float | None = None

    def dequantized(self) -> np.ndarray:
        """The float64 weight the integers stand for."""
        if self.kind == "float":
            return self.values.astype(np.float64)
        if self.scale is None:  # binary layers have no scale
            return self.values.astype(np.float64)
        shape = (-1,) + (1,) * (self.values.ndim - 1)
        return self.values.astype(np.float64) * np.asarray(self.scale, np.float64).reshape(shape)


@dataclass(frozen=True)
class Op:
    """One operation: ``kind`` (conv, linear, relu, avgpool, maxpool, flatten, batchnorm, sign,
    hardtanh, threshold), the module's name, attributes and parameters."""

    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    weight: Weight | None = None
    bias: np.ndarray | None = None


def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().cpu().numpy().copy()


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, tuple | list) else [int(value)] * 2


def uniform_weight(layer: QuantizedWeight) -> Weight:
    """The layer's b-bit weight as odd integer codes with scale ``Δ/2`` (the quantizer's own ops)."""
    bits, m = layer.bits, layer.m
    delta = step_size(bits, m)
    with torch.no_grad():
        code = torch.round((torch.clamp(layer.weight.detach().cpu(), -m, m) + m) / delta)
    odd = 2 * code.to(torch.int64) - (2**bits - 1)
    return Weight("uniform", odd.numpy().astype(np.int32), bits, np.array([delta / 2]), m)


def float_weight(tensor: torch.Tensor) -> Weight:
    return Weight("float", _numpy(tensor).astype(np.float32))


def conv_op(name: str, module: nn.Conv2d, weight: Weight, **extra: Any) -> Op:
    """A conv op with the module's geometry and the given weight."""
    if isinstance(module.padding, str) and module.padding != "valid":
        raise UnsupportedLayerError(f"cannot export layer {name!r} (Conv2d): padding={module.padding!r}; use ints")
    if module.padding_mode != "zeros":
        raise UnsupportedLayerError(f"cannot export layer {name!r} (Conv2d): padding_mode={module.padding_mode!r}")
    padding = [0, 0] if module.padding == "valid" else _pair(module.padding)
    attrs = dict(stride=_pair(module.stride), padding=padding, dilation=_pair(module.dilation),
                 groups=int(module.groups), kernel=_pair(module.kernel_size), **extra)
    return Op("conv", name, attrs, weight, _numpy(module.bias))


def _pool(name: str, module: nn.Module) -> Op:
    kernel = _pair(module.kernel_size)
    stride = kernel if module.stride is None else _pair(module.stride)
    attrs = dict(kernel=kernel, stride=stride, padding=_pair(module.padding), ceil_mode=bool(module.ceil_mode))
    if isinstance(module, nn.MaxPool2d):
        if _pair(module.dilation) != [1, 1]:
            raise UnsupportedLayerError(f"cannot export layer {name!r} (MaxPool2d): dilation > 1")
        return Op("maxpool", name, attrs)
    if module.divisor_override is not None:
        raise UnsupportedLayerError(f"cannot export layer {name!r} (AvgPool2d): divisor_override")
    return Op("avgpool", name, {**attrs, "count_include_pad": bool(module.count_include_pad)})


def _batchnorm(name: str, module: nn.modules.batchnorm._BatchNorm) -> Op:
    if module.running_mean is None:
        raise UnsupportedLayerError(f"cannot export layer {name!r} ({type(module).__name__}): no running statistics")
    channels = module.num_features
    gamma = _numpy(module.weight) if module.affine else np.ones(channels, np.float32)
    beta = _numpy(module.bias) if module.affine else np.zeros(channels, np.float32)
    attrs = dict(eps=float(module.eps), mean=_numpy(module.running_mean), var=_numpy(module.running_var),
                 gamma=gamma, beta=beta)
    return Op("batchnorm", name, attrs)


def _flatten(name: str, module: nn.Flatten) -> Op:
    if module.start_dim != 1 or module.end_dim != -1:
        raise UnsupportedLayerError(f"cannot export layer {name!r} (Flatten): only start_dim=1, end_dim=-1")
    return Op("flatten", name)


def _hardtanh(name: str, module: nn.Hardtanh) -> Op:
    return Op("hardtanh", name, dict(min=float(module.min_val), max=float(module.max_val)))


#: module type → lowering, most specific first (QuantConv2d is also an nn.Conv2d).
LOWERINGS: list[tuple[type, Callable[[str, Any], Op | list[Op] | None]]] = [
    (QuantConv2d, lambda n, mod: conv_op(n, mod, uniform_weight(mod))),
    (QuantLinear, lambda n, mod: Op("linear", n, {}, uniform_weight(mod), _numpy(mod.bias))),
    (nn.Conv2d, lambda n, mod: conv_op(n, mod, float_weight(mod.weight))),
    (nn.Linear, lambda n, mod: Op("linear", n, {}, float_weight(mod.weight), _numpy(mod.bias))),
    (nn.ReLU, lambda n, mod: Op("relu", n)),
    (nn.AvgPool2d, _pool),
    (nn.MaxPool2d, _pool),
    (nn.Flatten, _flatten),
    (nn.BatchNorm1d, _batchnorm),
    (nn.BatchNorm2d, _batchnorm),
    (nn.Hardtanh, _hardtanh),
    (nn.Dropout, lambda n, mod: None),
    (nn.Identity, lambda n, mod: None),
]

#: modules that add their own lowerings to LOWERINGS when imported (binary layers)
EXTENSIONS = ("qatcore.export.binary",)


def supported() -> list[str]:
    """Names of the module types the exporters take."""
    for module in EXTENSIONS:
        importlib.import_module(module)
    return sorted({kind.__name__ for kind, _ in LOWERINGS})


def leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model's modules in execution order, looking inside ``nn.Sequential`` containers only."""
    if isinstance(model, nn.Sequential):
        return [pair for name, child in model.named_children()
                for pair in leaves(child, f"{prefix}.{name}" if prefix else name)]
    return [(prefix or type(model).__name__, model)]


def lower(model: nn.Module) -> list[Op]:
    """The model (in eval mode) as a list of ops; ``UnsupportedLayerError`` names a layer it cannot express."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    allowed = supported()
    ops: list[Op] = []
    for name, module in leaves(model):
        lowering = next((fn for kind, fn in LOWERINGS if isinstance(module, kind)), None)
        if lowering is None:
            raise UnsupportedLayerError(
                f"cannot export layer {name!r} ({type(module).__name__}): the exporters take "
                f"nn.Sequential chains of {allowed}"
            )
        result = lowering(name, module)
        ops.extend([] if result is None else result if isinstance(result, list) else [result])
    from qatcore.export.binary import drop_repeated_signs

    return drop_repeated_signs(ops)


def as_float(ops: list[Op]) -> list[Op]:
    """The same ops with every weight dequantized to float32: the float baseline of a file size."""
    return [op if op.weight is None or op.weight.kind == "float"
            else replace(op, weight=Weight("float", op.weight.dequantized().astype(np.float32)))
            for op in ops]


def weight_bits(ops: list[Op]) -> dict[str, int]:
    """Bit width of every weighted op's weight, by layer name (32 for float)."""
    return {op.name: op.weight.bits for op in ops if op.weight is not None}
