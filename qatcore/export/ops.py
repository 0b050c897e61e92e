"""What every exporter reads: ``Op`` (one operation of a model) and ``Weight``, and how a module's
weights and geometry become them. ``graph`` (the standard layers) and ``binary`` (the binary
layers) both lower modules with these; neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import numpy as np
import torch
from torch import nn

from qatcore.quantized import QuantizedLayer
from qatcore.quantizers import step_size

#: how a module becomes ops: ``lowering(name, module)`` gives one op, several, or None (nothing to do)
Lowering = Callable[[str, Any], "Op | list[Op] | None"]


class UnsupportedLayerError(ValueError):
    """A layer of the model that the exporters cannot express."""


@dataclass(frozen=True)
class Weight:
    """A weight tensor: ``float`` (float32 values), ``uniform`` (odd integer codes, scale Δ/2 for the
    tensor or one per output channel, range m) or ``binary`` (±1 values, no scale)."""

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
    """One operation: ``kind`` (conv, linear, relu, avgpool, maxpool, global_avgpool, flatten,
    batchnorm, affine, act_quant, sign, hardtanh, threshold), the module's name, attributes and
    parameters."""

    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    weight: Weight | None = None
    bias: np.ndarray | None = None

    def layer_weight(self) -> Weight:
        """``weight`` of a conv or linear op, which always carries one."""
        assert self.weight is not None, f"{self.kind} op {self.name!r} has no weight"
        return self.weight


@overload
def to_numpy(tensor: torch.Tensor) -> np.ndarray: ...


@overload
def to_numpy(tensor: None) -> None: ...


def to_numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    """A detached CPU copy of ``tensor`` as a NumPy array (None stays None)."""
    return None if tensor is None else tensor.detach().cpu().numpy().copy()


def pair(value: Any) -> list[int]:
    """A module's int-or-pair geometry argument (kernel, stride, padding) as ``[h, w]``."""
    return [int(v) for v in value] if isinstance(value, tuple | list) else [int(value)] * 2


class UniformLayer(QuantizedLayer, Protocol):
    """A layer whose ``weight`` is quantized to ``weight_bits`` uniform levels on ``[-m, m]``."""

    weight: torch.Tensor
    m: float


def uniform_weight(layer: UniformLayer) -> Weight:
    """The layer's b-bit weight as odd integer codes with scale ``Δ/2`` (the quantizer's own ops)."""
    bits, m = layer.weight_bits, layer.m
    if bits is None:
        raise UnsupportedLayerError(f"{type(layer).__name__} has float weights, not uniform levels")
    delta = step_size(bits, m)
    with torch.no_grad():
        code = torch.round((torch.clamp(layer.weight.detach().cpu(), -m, m) + m) / delta)
    odd = 2 * code.to(torch.int64) - (2**bits - 1)
    return Weight("uniform", odd.numpy().astype(np.int32), bits, np.array([delta / 2]), m)


def float_weight(tensor: torch.Tensor) -> Weight:
    """A float weight as float32 values."""
    return Weight("float", to_numpy(tensor).astype(np.float32))


def conv_op(name: str, module: nn.Conv2d, weight: Weight, **extra: Any) -> Op:
    """A conv op with the module's geometry and the given weight."""
    if isinstance(module.padding, str) and module.padding != "valid":
        raise UnsupportedLayerError(
            f"cannot export layer {name!r} (Conv2d): padding={module.padding!r}; use ints"
        )
    if module.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"cannot export layer {name!r} (Conv2d): padding_mode={module.padding_mode!r}"
        )
    padding = [0, 0] if module.padding == "valid" else pair(module.padding)
    attrs = dict(
        stride=pair(module.stride),
        padding=padding,
        dilation=pair(module.dilation),
        groups=int(module.groups),
        kernel=pair(module.kernel_size),
        **extra,
    )
    return Op("conv", name, attrs, weight, to_numpy(module.bias))
