"""Bit widths of layers from other quantisation libraries, read without importing them.

``qatcore.cost.ace`` asks this module what a conv/linear layer or an activation quantiser from
Brevitas or torchao computes with:

- **Brevitas** (``brevitas.nn``): a layer's ``weight_quant``, ``input_quant`` and ``output_quant``
  proxies (``is_quant_enabled``, ``bit_width()``; older releases also offer
  ``quant_weight_bit_width()``); an activation layer (``QuantReLU``, ``QuantIdentity``,
  ``QuantHardTanh`` …) through its ``act_quant`` proxy.
- **torchao** QAT (``FakeQuantizedLinear``, ``FakeQuantizedEmbedding``): the integer ``dtype`` of
  its ``weight_fake_quantizer`` and ``activation_fake_quantizer`` configurations (``torch.int4`` → 4).

Each function returns ``UNKNOWN`` when the module is none of these, ``None`` when the library
leaves that operand in float, else the width in bits.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

UNKNOWN = "unknown"


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


def weight_bits(module: nn.Module) -> int | None | str:
    """Weight width of a Brevitas or torchao conv/linear, ``None`` if float, ``UNKNOWN`` if neither."""
    library = _library(module)
    if library == "brevitas" and hasattr(module, "weight_quant"):
        if (
            callable(getattr(module, "quant_weight_bit_width", None))
            and module.weight_quant.is_quant_enabled
        ):
            return int(round(float(module.quant_weight_bit_width())))
        return _proxy_bits(module.weight_quant)
    if library == "torchao" and hasattr(module, "weight_fake_quantizer"):
        return _torchao_bits(module.weight_fake_quantizer)
    return UNKNOWN


def input_bits(module: nn.Module) -> int | None | str:
    """Width a Brevitas or torchao conv/linear quantises its own input to (``None``: it does not)."""
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
