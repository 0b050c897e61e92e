"""What a quantized layer says about itself to the code that counts it or ships it: its bit widths.

Paper 1's ``QuantConv2d``/``QuantLinear``, paper 2's PikeLPN layers and paper 3's binary layers all
answer ``weight_bits`` and ``input_bits``; ``qatcore.cost.ace`` and ``qatcore.export`` read those
two attributes and never import the package a layer comes from. ``None`` (or 32) means an
unquantised float operand.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class QuantizedLayer(Protocol):
    """A conv/linear layer whose weights are ``weight_bits`` wide and whose input ``input_bits``."""

    @property
    def weight_bits(self) -> int | None: ...

    @property
    def input_bits(self) -> int | None: ...
