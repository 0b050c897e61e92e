"""Binary layers of the BNN-training models, identical in both training modes.

Forward semantics (what an exporter may rely on, in either mode and after either kind of training):

* ``BinaryLinear`` / ``BinaryConv2d`` compute ``y = op(x_b, sign(W))`` with ``sign(v) = +1`` for
  ``v >= 0`` and ``-1`` otherwise, no scale factor and **no bias**; ``x_b = sign(x)`` unless the layer
  is the first (``binary_input=False``: the full-precision input is used as it is). Attributes
  ``weight_bits = 1`` and ``input_bits = 1`` (32 for the first layer). The latent weight may be
  float32 (standard mode) or float16 (low-memory mode); only its sign matters in the forward pass.
* Batch norm after each binary layer is an ``nn.BatchNorm1d/2d``: torch's own (standard mode) or its
  subclass ``L1BatchNorm1d/2d`` (low-memory mode), whose *evaluation* formula is exactly torch's
  ``γ·(x − running_mean)/sqrt(running_var + eps) + β`` with ``γ = 1``, ``eps = 0`` and
  ``running_var`` holding the square of the running l1 dispersion σ. ``batch_norm_scale_shift``
  gives the per-channel ``(a, b)`` with ``BN(x) = a·x + b`` for either.
* ``SignActivation`` outputs ``sign(x)`` (±1, ``sign(0) = +1``); it follows every batch norm but the
  last, whose output is the logits.
* ``MaxPool2d`` is ``nn.MaxPool2d(2, 2)`` (2×2 windows, stride 2).

A model is ``[binary layer → batch norm → sign]*`` with pooling in between, ending in
``binary layer → batch norm``. The training mode (``low_memory`` flag on each layer, set with
``qatcore.bnn.models.set_mode``) changes only what is kept for the backward pass and how gradients
are computed (``qatcore.bnn.functions``), never the forward result in evaluation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from qatcore.bnn import functions as fn
from qatcore.bnn.functions import sign

if TYPE_CHECKING:  # what the mixins below are mixed into, for the type checker only
    _Layer = nn.Module
    _BatchNorm = nn.modules.batchnorm._BatchNorm
else:
    _Layer = _BatchNorm = object


def _training_step(module: nn.Module) -> bool:
    """Use the autograd Functions only when gradients are being recorded in training."""
    return module.training and torch.is_grad_enabled()


class BinaryLayer(_Layer):
    """Mixin of the two binary layers: ``sign(W)`` weights, optional ``sign(x)`` inputs, no bias."""

    weight: torch.Tensor
    weight_bits = 1

    def _setup_binary(self, binary_input: bool) -> None:
        if not isinstance(binary_input, bool):
            raise TypeError(f"binary_input must be a bool, got {binary_input!r}")
        self.binary_input = binary_input
        self.input_bits = 1 if binary_input else 32
        self.low_memory = False
        self.clip = True  # mask dW by |w| ≤ 1 (latent weights); False for Bop's ±1 weights
        self.gradient = "po2"  # the low-memory mode's dY format (functions.GRADIENT_FORMATS)
        self.bit_gradients = True  # the low-memory mode keeps dW as sign bits (False: float16)
        with torch.no_grad():  # the authors' initialisation: N(0, std = 1/sqrt(fan_in))
            self.weight.normal_(0.0, 1.0 / math.sqrt(self.weight[0].numel()))

    def binary_weight(self) -> torch.Tensor:
        """``sign(W)`` as a plain tensor (float32, no gradient), the weights an exporter packs."""
        return sign(self.weight.detach().float())

    def _binary_forward(self, x: torch.Tensor, op) -> torch.Tensor:
        if _training_step(self):
            if self.low_memory:
                return fn.LowMemoryBinaryLayer.apply(
                    x,
                    self.weight,
                    op,
                    self.binary_input,
                    self.clip,
                    self.gradient,
                    self.bit_gradients,
                )
            return fn.StandardBinaryLayer.apply(x, self.weight, op, self.binary_input, self.clip)
        xb = sign(x) if self.binary_input else x
        return op(xb, sign(self.weight).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, binary_input={self.binary_input}, low_memory={self.low_memory}"


class BinaryLinear(BinaryLayer, nn.Linear):
    """``nn.Linear`` without bias computing ``sign(x)·sign(W)ᵀ`` (``x`` itself if ``binary_input=False``)."""

    def __init__(self, in_features: int, out_features: int, binary_input: bool = True) -> None:
        super().__init__(in_features, out_features, bias=False)
        self._setup_binary(binary_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._binary_forward(x, fn.DenseOp())


class BinaryConv2d(BinaryLayer, nn.Conv2d):
    """``nn.Conv2d`` without bias convolving ``sign(x)`` (or ``x``) with ``sign(W)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 0,
        stride: int = 1,
        binary_input: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self._setup_binary(binary_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._binary_forward(x, fn.ConvOp(self.stride, self.padding))


class SignActivation(nn.Module):
    """``sign(x)`` with the clipped straight-through gradient ``1[|x| ≤ 1]``."""

    #: ACE prices it as what it is, one comparison with 0 per element (``qatcore.cost.ace.RECIPES``)
    ace_recipe = "sign"

    def __init__(self) -> None:
        super().__init__()
        self.low_memory = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _training_step(self):
            return fn.SignSTE.apply(x, self.low_memory)
        return sign(x)

    def extra_repr(self) -> str:
        return f"low_memory={self.low_memory}"


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(2, 2)`` that keeps only its switch mask for backward (float32 or packed bits)."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)
        self.low_memory = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _training_step(self):
            return fn.MaxPool2x2.apply(x, self.low_memory)
        return super().forward(x)


class RealLayer(_Layer):
    """Mixin of the real-valued (higher-precision) layers of ResNetE-18: its first convolution, its
    1×1 shortcut convolutions and its last dense layer. Standard mode: torch's float32 layer. Low-memory
    mode: float16 weights, the input kept in float16 for backward (``functions.HalfInputLayer``)."""

    low_memory = False
    weight: torch.Tensor
    weight_bits = input_bits = None  # real-valued: ACE counts both operands at its float width

    def _real_forward(self, x: torch.Tensor, op) -> torch.Tensor:
        if _training_step(self) and self.low_memory:
            return fn.HalfInputLayer.apply(x, self.weight, self.bias, op)
        bias = cast("torch.Tensor | None", self.bias)  # the classifier's; None in the convolutions
        bias = None if bias is None else bias.to(x.dtype)
        y = op(x, self.weight.to(x.dtype))
        return y if bias is None else y + bias.view((1, -1) + (1,) * (y.dim() - 2))


class RealConv2d(RealLayer, nn.Conv2d):
    """A real-valued ``nn.Conv2d`` without bias (a batch norm follows it)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._real_forward(x, fn.ConvOp(self.stride, self.padding))


class RealLinear(RealLayer, nn.Linear):
    """A real-valued ``nn.Linear`` with bias (the classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._real_forward(x, fn.DenseOp())


class ReLU(nn.ReLU):
    """``max(x, 0)`` keeping its mask for backward: float32 (standard, the bytes torch keeps) or packed bits."""

    low_memory = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _training_step(self):
            return fn.ReLUMask.apply(x, self.low_memory)
        return x.clamp_min(0)


class StemMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(3, 2, 1)``; in the low-memory mode it keeps one byte per output (the maximum's place in its
    window) instead of torch's float32 input and int64 indices."""

    low_memory = False

    def __init__(self) -> None:
        super().__init__(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _training_step(self) and self.low_memory:
            return fn.MaxPool3x3.apply(x)
        return super().forward(x)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d(2, 2)`` (even sides) that keeps nothing for backward."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _training_step(self):
            return fn.AvgPool2x2.apply(x)
        return super().forward(x)


class L1BatchNorm(_BatchNorm):
    """Mixin: the paper's l1 batch norm as an ``nn.BatchNorm`` (``γ = 1`` frozen, ``eps = 0``).

    Training uses ``σ = mean|x − μ|``; the running statistics keep ``μ`` and ``σ²`` (momentum 0.1,
    the authors' 0.9 in Keras' convention), so evaluation is torch's batch-norm formula.
    """

    low_memory = True
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def _setup_l1(self) -> None:
        self.eps = 0.0
        self.weight.requires_grad_(False)
        self.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _training_step(self):
            return F.batch_norm(
                x,
                self.running_mean.float(),
                self.running_var.float(),
                self.weight.float(),
                self.bias.float(),
                False,
                0.0,
                self.eps,
            )
        out, mu, sigma = fn.L1BatchNorm.apply(x, self.bias)
        self.update_running(mu, sigma)
        return out

    def update_running(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        """Fold a training batch's ``μ`` and ``σ`` into the running statistics."""
        momentum = cast(
            float, self.momentum
        )  # nn.BatchNorm's 0.1 (None, a cumulative mean, is not used)
        with torch.no_grad():  # running ← running + momentum·(batch − running), in float32
            self.running_mean.copy_(self.running_mean.float().lerp_(mu, momentum))
            self.running_var.copy_(
                self.running_var.float().sqrt_().lerp_(sigma, momentum).square_()
            )
            self.num_batches_tracked.add_(1)


class L1BatchNorm1d(L1BatchNorm, nn.BatchNorm1d):
    """l1 batch norm over features (N×C)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self._setup_l1()


class L1BatchNorm2d(L1BatchNorm, nn.BatchNorm2d):
    """l1 batch norm over channels (N×C×H×W)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self._setup_l1()


def batch_norm_scale_shift(
    bn: nn.modules.batchnorm._BatchNorm,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel float32 ``(a, b)`` with ``bn(x) = a·x + b`` in evaluation (torch's or l1 batch norm)."""
    if (
        not isinstance(bn, nn.modules.batchnorm._BatchNorm)
        or bn.running_var is None
        or bn.running_mean is None
    ):
        raise TypeError(f"bn must be a batch norm with running statistics, got {type(bn).__name__}")
    gamma = (
        bn.weight.detach().float()
        if bn.weight is not None
        else torch.ones_like(bn.running_var.float())
    )
    beta = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(gamma)
    a = gamma / torch.sqrt(bn.running_var.float() + bn.eps)
    return a, beta - a * bn.running_mean.float()


def binary_layers(model: nn.Module) -> dict[str, BinaryLayer]:
    """The model's binary layers by name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BinaryLayer)}
