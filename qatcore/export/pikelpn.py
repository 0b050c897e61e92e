"""The PikeLPN-style layers (``qatcore.cost.pikelpn_layers``) for the exporters.

``PikeConv2d``/``PikeLinear`` lower to a layer whose weight is odd integer codes with one scale
per tensor or per output channel (``Q(w) = s·q``, ``s = m/(2^b − 1)``, the scale Double
Quantization may have rounded); ``ActQuant`` to an activation quantizer (``act_quant``: clip to
``[0, α]``, round to the step ``α/(2^b − 1)``) or a ReLU; ``QuantNorm`` to its quantized
per-channel multiply-add (``affine``); ``AdaptiveAvgPool2d(1)`` to a global average pool.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qatcore.cost.pikelpn_layers import ActQuant, PikeConv2d, PikeLinear, QuantNorm
from qatcore.export.ops import (
    Lowering,
    Op,
    UnsupportedLayerError,
    Weight,
    conv_op,
    float_weight,
    to_numpy,
)


@torch.no_grad()
def pike_weight(layer) -> Weight:
    """The layer's kernel: float, or the quantizer's levels as odd codes ``q`` times their scale ``s``."""
    quantizer = layer.weight_quantizer
    if quantizer is None:
        return float_weight(layer.weight)
    w = layer.weight.detach().cpu()
    scale = quantizer.scale(w).reshape(-1).double()
    levels = quantizer(w).double()
    codes = torch.round(levels / scale.reshape(-1, *[1] * (w.dim() - 1)))
    bound = 2**quantizer.bits - 1
    if codes.abs().max() > bound or torch.any(torch.remainder(codes, 2) != 1):
        raise UnsupportedLayerError(
            f"cannot export the weight quantizer of {type(layer).__name__}: "
            f"its levels are not odd multiples of its scale within ±{bound}"
        )
    return Weight(
        "uniform",
        codes.numpy().astype(np.int32),
        quantizer.bits,
        scale.numpy(),
        float(quantizer.weight_range(w).max()),
    )


def _conv(name: str, layer) -> Op:
    return conv_op(name, layer, pike_weight(layer))


def _linear(name: str, layer) -> Op:
    return Op("linear", name, {}, pike_weight(layer), to_numpy(layer.bias))


@torch.no_grad()
def _act_quant(name: str, module) -> Op:
    if module.bits is None:
        return Op("relu", name)
    step = float(module.step())
    return Op("act_quant", name, {"bits": int(module.bits), "step": step})


@torch.no_grad()
def _quant_norm(name: str, module) -> Op:
    a, b = module.quantized_affine(module.running_mean, module.running_var)
    return Op(
        "affine",
        name,
        {"scale": to_numpy(a).astype(np.float32), "shift": to_numpy(b).astype(np.float32)},
    )


def _adaptive_avg_pool(name: str, module: nn.AdaptiveAvgPool2d) -> Op:
    size = module.output_size
    if tuple(size if isinstance(size, tuple | list) else (size, size)) != (1, 1):
        raise UnsupportedLayerError(
            f"cannot export layer {name!r} (AdaptiveAvgPool2d): only output_size=1"
        )
    return Op("global_avgpool", name)


#: PikeLPN module type → lowering, and the global pool
LOWERINGS: list[tuple[type, Lowering]] = [
    (nn.AdaptiveAvgPool2d, _adaptive_avg_pool),
    (PikeConv2d, _conv),
    (PikeLinear, _linear),
    (ActQuant, _act_quant),
    (QuantNorm, _quant_norm),
]
