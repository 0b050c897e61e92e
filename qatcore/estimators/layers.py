"""Layers whose weights are quantized in the forward pass and get an estimator's Q̂′ backward.

Only the weights are quantized (as in the first paper's experiments); activations stay float.
Each layer's range ``m`` defaults to the He-uniform limit ``sqrt(6 / fan_in)``, and the latent
weights are initialised uniformly on ``[-m, m]``, so every level is in use from the start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qatcore import estimators
from qatcore.quantizers import check_bits, check_range, fan_in, he_uniform_range, uniform_quantize


class QuantizedWeight:
    """Mixin: a ``weight`` quantized to ``bits`` bits on ``[-m, m]`` with a chosen estimator."""

    weight: torch.Tensor  # the layer's nn.Parameter (declared as torch's layers declare it)
    #: the input stays float (``qatcore.quantized.QuantizedLayer``): only the weights are quantized
    input_bits: int | None = None

    @property
    def weight_bits(self) -> int:
        """``bits``, under the name ``qatcore.quantized.QuantizedLayer`` reads."""
        return self.bits

    def _setup_quantizer(self, bits: int, estimator, m: float | None) -> None:
        self.bits = check_bits(bits)
        self.estimator = estimators.get(estimator)
        self.m = he_uniform_range(fan_in(self.weight)) if m is None else check_range(m)
        with torch.no_grad():
            self.weight.uniform_(-self.m, self.m)
            if (bias := getattr(self, "bias", None)) is not None:
                bias.zero_()

    def quantized_weight(self) -> torch.Tensor:
        """``Q(weight)``, with the estimator's backward."""
        return self.estimator.bind(self.bits, self.m).quantize(self.weight)

    def weight_levels(self) -> torch.Tensor:
        """``Q(weight)`` as a plain tensor (no gradient)."""
        return uniform_quantize(self.weight.detach(), self.bits, self.m)

    @torch.no_grad()
    def apply_weight_map(self, estimator=None) -> None:
        """Replace the latent weights ``w`` by ``M(w)`` of ``estimator`` (default: this layer's)."""
        est = self.estimator if estimator is None else estimators.get(estimator)
        self.weight.copy_(est.weight_map(self.weight, self.bits, self.m))

    def extra_repr(self) -> str:  # shown by print(model)
        base = super().extra_repr()  # type: ignore[misc]  # the torch layer this mixin precedes
        return f"{base}, bits={self.bits}, m={self.m:.4f}, estimator={self.estimator.name}"


class QuantConv2d(QuantizedWeight, nn.Conv2d):
    """``nn.Conv2d`` with a quantized kernel."""

    def __init__(self, *args, bits: int = 2, estimator="ste", m: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_quantizer(bits, estimator, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantLinear(QuantizedWeight, nn.Linear):
    """``nn.Linear`` with a quantized weight matrix."""

    def __init__(self, *args, bits: int = 2, estimator="ste", m: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_quantizer(bits, estimator, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


def quantized_layers(model: nn.Module) -> dict[str, QuantizedWeight]:
    """The model's quantized layers by name, in definition order."""
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, QuantizedWeight)}


def quantize_convolutions(
    model: nn.Module, bits: int, estimator="ste", m: float | None = None
) -> nn.Module:
    """Replace every ``nn.Conv2d`` of ``model`` (in place) by a ``QuantConv2d`` of the same geometry.

    The first paper quantizes every kernel but the classifier's, so dense layers, batch norm and
    activations stay float. The new layers start from this layer type's uniform initialisation.
    """
    for name, child in model.named_children():
        if isinstance(child, nn.Conv2d) and not isinstance(child, QuantizedWeight):
            setattr(
                model,
                name,
                QuantConv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                    child.padding_mode,
                    bits=bits,
                    estimator=estimator,
                    m=m,
                ),
            )
        else:
            quantize_convolutions(child, bits, estimator, m)
    return model
