"""Bit widths of layers from other quantisation libraries, read without importing them.

``qatcore.cost.ace`` asks this module what a conv/linear layer or an activation quantiser from
Brevitas or torchao computes with:

- **Brevitas** (``brevitas.nn``): a layer's ``weight_quant``, ``input_quant`` and ``output_quant``
  proxies (``is_quant_enabled``, ``bit_width()``; older releases also offer
  ``quant_weight_bit_width()``); an activation layer (``QuantReLU``, ``QuantIdentity``,
  ``QuantHardTanh`` …) through its ``act_quant`` proxy.
- **torchao** QAT (``FakeQuantizedLinear``, ``FakeQuantizedEmbedding``): the integer ``dtype`` of
  its ``weight_fake_quantizer`` and ``activation_fake_quantizer`` configurations (``torch.int4`` → 4).
- **torchao** post-training quantization (``quantize_`` with ``Int8WeightOnlyConfig``,
  ``Int8DynamicActivationInt8WeightConfig`` …): a plain ``nn.Linear``/``nn.Conv2d`` whose weight is a
  torchao tensor subclass. Its width is read from the stored integers (``qdata``'s dtype, or
  ``quant_min``/``quant_max``); an activation quantized on the fly (``act_quant_kwargs`` of an
  ``Int8Tensor``) is 8 bits. A torchao weight whose width cannot be read raises ``ValueError``
  rather than being costed as float.

Each function returns ``UNKNOWN`` when the module is none of these, ``None`` when the library
leaves that operand in float, else the width in bits.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final, Literal

from torch import nn

UNKNOWN: Final = "unknown"


def _library(module: nn.Module) -> str:
    return type(module).__module__.split(".")[0]


def _proxy_bits(proxy: Any) -> int | None:
    """Width of an enabled Brevitas quantiser proxy, ``None`` when it is disabled."""
    if proxy is None or not getattr(proxy, "is_quant_enabled", False):
        return None
    return int(round(float(proxy.bit_width())))


def _torchao_bits(fake_quantizer: Any) -> int | None:
    """Width of a torchao fake quantiser's integer ``dtype`` (``torch.int4`` → 4), ``None`` if absent or float."""
    if fake_quantizer is None or not getattr(fake_quantizer, "enabled", True):
        return None
    match = re.fullmatch(
        r"torch\.u?int(\d+)", str(getattr(getattr(fake_quantizer, "config", None), "dtype", ""))
    )
    return int(match.group(1)) if match else None


def _torchao_weight(module: nn.Module) -> Any:
    """The module's weight if it is a torchao tensor subclass (post-training quantized), else None."""
    weight = getattr(module, "weight", None)
    module_name = type(weight).__module__ if weight is not None else ""
    return weight if module_name.split(".")[0] == "torchao" else None


def _width_of_range(low: int, high: int) -> int:
    return max(1, math.ceil(math.log2(int(high) - int(low) + 1)))


def torchao_tensor_bits(weight: Any, name: str = "the weight") -> int:
    """Width of the integers a torchao quantized tensor stores; ``ValueError`` when it cannot be read."""
    kind = type(weight).__name__
    if re.search(r"Int4|UInt4|4bit", kind, re.IGNORECASE):  # int4 codes are packed two per byte
        return 4
    low, high = getattr(weight, "quant_min", None), getattr(weight, "quant_max", None)
    if isinstance(low, int) and isinstance(high, int):
        return _width_of_range(low, high)
    stored = getattr(weight, "qdata", None)
    if stored is None:
        stored = getattr(weight, "int_data", None)
    dtype = getattr(stored, "dtype", None)
    match = re.fullmatch(r"torch\.u?int(\d+)", str(dtype))
    if match:
        return int(match.group(1))
    raise ValueError(
        f"{name} is a torchao {kind}, whose integer width qatcore cannot read; "
        "give the layer's bits explicitly (count(..., bits={name: (w_bits, a_bits)}))"
    )


def weight_bits(module: nn.Module) -> int | None | Literal["unknown"]:
    """Weight width of a Brevitas or torchao conv/linear, ``None`` if float, ``UNKNOWN`` if neither."""
    if (weight := _torchao_weight(module)) is not None:
        return torchao_tensor_bits(weight, f"the weight of a {type(module).__name__}")
    library = _library(module)
    layer: Any = module  # a foreign layer: its quantisers are not attributes torch types
    if library == "brevitas" and hasattr(layer, "weight_quant"):
        if (
            callable(getattr(layer, "quant_weight_bit_width", None))
            and layer.weight_quant.is_quant_enabled
        ):
            return int(round(float(layer.quant_weight_bit_width())))
        return _proxy_bits(layer.weight_quant)
    if library == "torchao" and hasattr(layer, "weight_fake_quantizer"):
        return _torchao_bits(layer.weight_fake_quantizer)
    return UNKNOWN


def input_bits(module: nn.Module) -> int | None | Literal["unknown"]:
    """Width a Brevitas or torchao conv/linear quantises its own input to (``None``: it does not)."""
    if (weight := _torchao_weight(module)) is not None:
        kwargs = getattr(weight, "act_quant_kwargs", None)
        if kwargs is None:
            return None  # weight-only: the input stays float
        match = re.search(r"Int(\d+)", type(kwargs).__name__)
        if match is None:
            raise ValueError(
                f"the input of a {type(module).__name__} is quantized by torchao's "
                f"{type(kwargs).__name__}, whose width qatcore cannot read; give bits explicitly"
            )
        return int(match.group(1))
    library = _library(module)
    if library == "brevitas" and hasattr(module, "weight_quant"):
        return _proxy_bits(getattr(module, "input_quant", None))
    if library == "torchao" and hasattr(module, "weight_fake_quantizer"):
        return _torchao_bits(getattr(module, "activation_fake_quantizer", None))
    return UNKNOWN


def output_bits(module: nn.Module) -> int | None:
    """Width a Brevitas layer quantises its own output to, ``None`` when it does not."""
    if _library(module) != "brevitas":
        return None
    return _proxy_bits(getattr(module, "output_quant", None))


def activation_bits(module: nn.Module) -> int | None:
    """Width of a foreign activation quantiser (Brevitas ``act_quant``), ``None`` for anything else."""
    if _library(module) != "brevitas" or hasattr(module, "weight_quant"):
        return None
    return _proxy_bits(getattr(module, "act_quant", None))
