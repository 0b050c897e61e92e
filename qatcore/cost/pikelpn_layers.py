"""PikeLPN's building blocks: QuantNorm, Double Quantization, Distribution-Heterogeneous Quantization.

PikeLPN (Neseem et al., CVPR 2024) quantizes the element-wise operations of a low-precision
network, not only its multiply-accumulates. Its abstract names the three techniques below; the
equations are the course's own model of them, each kept in one small, swappable piece:

- **QuantNorm** — batch norm folded to ``s·x + t``, a per-channel scale ``s = γ/√(σ²+ε)`` and
  bias ``t = β − μ·s``, both quantised in every forward pass during training (batch statistics in
  training, running ones in eval), in fixed point: ``s`` to ``norm_bits`` and ``t`` to
  ``bias_bits``, each on a per-layer power-of-two scale just covering ``max|·|``, with the
  backward of an estimator from ``qatcore.estimators``. At inference the batch norm is then an
  integer multiply, an add and a shift on the accumulator instead of a float32 multiply-add.
- **Double Quantization** — the scales of the weight and activation quantisers (the
  de-quantisation ``s_w·s_a`` after each conv, the re-quantisation ``1/s_a`` before the next) are
  themselves quantised: to a power of two (``"pow2"``: the re-scaling becomes a shift) or to a
  ``scale_bits``-bit integer times a power of two shared by the layer (``"int"``).
- **Distribution-Heterogeneous Quantization (DHQ)** — depthwise and pointwise kernels of a
  separable convolution get different weight quantisers because their weights are distributed
  differently: a depthwise channel has 9 weights and its own scale (ranges differ widely across
  channels), a pointwise channel has ``C_in`` weights in a bell shape with rare outliers. Our
  reading: depthwise per-channel ``max|w|`` range, pointwise per-channel clipped range
  ``k·std(w)``; without DHQ every kernel shares one scheme (per-tensor ``max|w|``).

Every quantiser is the course's uniform quantizer (``qatcore.quantizers.uniform_quantize``) on a
range ``m`` (scale ``s = m/(2**bits − 1)``, levels ``s·odd integer``), applied through an
estimator (``Estimator.quantize``) on ``w/m`` so that ``m`` may be a per-channel tensor.

The modules give ``qatcore.cost.ace`` their inference operations through ``ace_operations`` (a float32
multiply when a scale is float, a low-bit multiply or a shift when it is quantised). Each module
is costed as it stands — one de-quantisation, one batch norm, one re-quantisation per output
element — with no folding of one layer's constants into another's (a reading; a fully fused float
pipeline would need one float multiply-add per element instead of three multiplies and an add).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from qatcore import estimators
from qatcore.checks import check_choice, int_at_least, positive_number
from qatcore.cost.cost_models import FLOAT, Operation
from qatcore.quantizers import check_bits

ScaleFormat = Literal["pow2", "int"]

SCALE_FORMATS: tuple[ScaleFormat, ...] = ("pow2", "int")
WEIGHT_SCHEMES = ("tensor-max", "channel-max", "channel-std")
#: Width of the integer accumulator in the cost model: enough for 4×4-bit products summed over
#: 2**16 terms or 8×8-bit ones over 2**8 (every layer here).
ACCUMULATOR_BITS = 24


def check_optional_bits(name: str, bits: object) -> int | None:
    """``None`` (float) or bits in [1, 16]; the error names ``name``."""
    if bits is None:
        return None
    try:
        return check_bits(bits)
    except ValueError:
        raise ValueError(
            f"{name} must be None (float) or an int from 1 to 16, got {bits!r}"
        ) from None


# --- Double Quantization -------------------------------------------------------------------------


def double_quantize_scale(
    scale: torch.Tensor, fmt: ScaleFormat = "pow2", scale_bits: int = 4, rounding: str = "ceil"
) -> torch.Tensor:
    """Quantise positive scales ``s`` (any shape, one layer's worth): the Double Quantization.

    ``"pow2"``: ``2**ceil(log2 s)`` (``rounding="ceil"``, so a range built on ``s`` still holds
    every value) or ``2**round(log2 s)``. ``"int"``: ``S·q`` with ``q`` an integer in
    ``[1, 2**scale_bits − 1]`` and ``S`` one power of two for all of ``scale``.
    Forward only; no gradient (callers detach or use the straight-through form).
    """
    check_choice("fmt", fmt, SCALE_FORMATS)
    check_choice("rounding", rounding, ("ceil", "round"))
    if not torch.all(scale > 0):
        raise ValueError("scale must be positive everywhere")
    to_int = torch.ceil if rounding == "ceil" else torch.round
    if fmt == "pow2":
        return torch.exp2(to_int(torch.log2(scale)))
    top = 2 ** check_bits(scale_bits) - 1
    shared = torch.exp2(torch.ceil(torch.log2(scale.max() / top)))
    return shared * torch.clamp(to_int(scale / shared), 1, top)


def is_power_of_two(x: torch.Tensor) -> torch.Tensor:
    """Element-wise: is ``x`` exactly ``2**k`` for an integer ``k``?"""
    mantissa, _ = torch.frexp(x)
    return (x > 0) & (mantissa == 0.5)


def scale_of(m: torch.Tensor, bits: int) -> torch.Tensor:
    """The quantiser's scale ``s = m/(2**bits − 1)``: half a step, levels are ``s·odd integer``."""
    return m / (2**bits - 1)


def range_of(scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of ``scale_of``: the range ``m`` whose scale is ``scale``."""
    return scale * (2**bits - 1)


def quantize_on_range(
    w: torch.Tensor, m: torch.Tensor, bits: int, estimator: estimators.Estimator
) -> torch.Tensor:
    """``m·Q(w/m)`` with the course's quantizer on [−1, 1] and ``estimator``'s backward.

    ``m`` (detached, positive) may broadcast against ``w``: one range per tensor or per channel.
    Equals ``uniform_quantize(w, bits, m)`` for a scalar ``m``.
    """
    m = m.detach()
    return m * estimator.quantize(w / m, bits, 1.0)


# --- cost-model plumbing -------------------------------------------------------------------------


def scaling_operations(
    layer: str, count: int, role: str, quantized_scale: bool, fmt: ScaleFormat, scale_bits: int
) -> list[Operation]:
    """``count`` multiplies by a quantisation scale: float32, or a shift (``"pow2"``), or a
    ``scale_bits``-bit multiply and a shift (``"int"``)."""
    if not quantized_scale:
        return [Operation(layer, "mul", count, (FLOAT, FLOAT), role)]
    ops = [Operation(layer, "shift", count, (ACCUMULATOR_BITS,), role)]
    if fmt == "int":
        ops.insert(0, Operation(layer, "mul", count, (ACCUMULATOR_BITS, scale_bits), role))
    return ops


# --- weight quantisers (DHQ picks one per kernel) ------------------------------------------------


class WeightQuantizer(nn.Module):
    """Quantise a conv or linear kernel to ``bits`` with one of ``WEIGHT_SCHEMES``.

    ``tensor-max``: one range ``max|w|``; ``channel-max``: one range per output channel;
    ``channel-std``: per output channel ``clip_sigmas·std(w_c)`` (clips the tails). With
    ``double_quant`` the scales ``m/(2**bits − 1)`` are double-quantised (ranges rounded up).
    """

    def __init__(
        self,
        bits: int,
        scheme: str = "tensor-max",
        estimator: str | estimators.Estimator = "ste",
        double_quant: bool = False,
        scale_format: ScaleFormat = "pow2",
        scale_bits: int = 4,
        clip_sigmas: float = 3.0,
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.scheme = check_choice("scheme", scheme, WEIGHT_SCHEMES)
        self.estimator = estimators.get(estimator)
        self.double_quant = bool(double_quant)
        self.scale_format = check_choice("scale_format", scale_format, SCALE_FORMATS)
        self.scale_bits = check_bits(scale_bits)
        self.clip_sigmas = positive_number("clip_sigmas", clip_sigmas)

    def weight_range(self, w: torch.Tensor) -> torch.Tensor:
        """The range ``m`` (detached; shape broadcastable to ``w``) the scheme picks for ``w``."""
        w = w.detach()
        flat = w.flatten(1)
        if self.scheme == "tensor-max":
            m = flat.abs().max().reshape([1] * w.dim())
        else:
            if self.scheme == "channel-max":
                per_channel = flat.abs().amax(dim=1)
            else:
                std = flat.std(dim=1, unbiased=False) if flat.shape[1] > 1 else flat.abs()[:, 0]
                per_channel = torch.minimum(self.clip_sigmas * std, flat.abs().amax(dim=1))
            m = per_channel.reshape(-1, *[1] * (w.dim() - 1))
        m = torch.clamp(m, min=torch.finfo(w.dtype).tiny * 2**self.bits)
        if self.double_quant:
            scale = double_quantize_scale(
                scale_of(m, self.bits), self.scale_format, self.scale_bits
            )
            m = range_of(scale, self.bits)
        return m

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """The scale(s) ``s`` with ``Q(w) = s·(odd integer)``."""
        return scale_of(self.weight_range(w), self.bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_on_range(w, self.weight_range(w), self.bits, self.estimator)

    def extra_repr(self) -> str:
        dq = f", double_quant={self.scale_format}" if self.double_quant else ""
        return f"bits={self.bits}, scheme={self.scheme}, estimator={self.estimator.name}{dq}"


class CostedLayer:
    """Mixin for a conv/linear whose kernel goes through ``weight_quantizer`` (``None``: float)
    and whose input carries ``input_bits`` (``None``: float).

    Costed for ``qatcore.cost.ace`` as ``ace.count`` costs any quantised conv — MACs at
    ``(weight_bits, input_bits)``, a bias add, a re-scale of each output by ``s_w·s_a`` and a
    multiply of each input onto its grid — except that with ``double_quant`` (both scales
    double-quantised) the two multiplies are shifts (or low-bit multiplies and shifts).
    """

    weight: torch.Tensor

    def _setup(
        self,
        weight_quantizer: WeightQuantizer | None,
        input_bits: int | None,
        double_quant: bool,
        scale_format: ScaleFormat,
        scale_bits: int,
    ) -> None:
        if weight_quantizer is not None and not isinstance(weight_quantizer, WeightQuantizer):
            raise TypeError(
                "weight_quantizer must be a WeightQuantizer or None, "
                f"got {type(weight_quantizer).__name__}"
            )
        self.weight_quantizer = weight_quantizer
        self.weight_bits = None if weight_quantizer is None else weight_quantizer.bits
        self.input_bits = None if input_bits is None else check_bits(input_bits)
        self.double_quant = bool(double_quant)
        self.scale_format = check_choice("scale_format", scale_format, SCALE_FORMATS)
        self.scale_bits = check_bits(scale_bits)

    def quantized_weight(self) -> torch.Tensor:
        """The kernel the layer computes with."""
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def ace_operations(self, inputs, output, name: str) -> list[Operation]:
        n_out, n_in = output.numel(), inputs[0].numel()
        ops = [
            Operation(
                name,
                "mac",
                n_out * self.weight[0].numel(),
                (self.weight_bits, self.input_bits),
                "mac",
            )
        ]
        if getattr(self, "bias", None) is not None:
            ops.append(Operation(name, "add", n_out, (ACCUMULATOR_BITS, ACCUMULATOR_BITS), "bias"))
        if self.weight_bits is not None:
            ops += scaling_operations(
                name, n_out, "rescale", self.double_quant, self.scale_format, self.scale_bits
            )
        if self.input_bits is not None:
            ops += scaling_operations(
                name, n_in, "quantise", self.double_quant, self.scale_format, self.scale_bits
            )
        return ops


class PikeConv2d(CostedLayer, nn.Conv2d):
    """``nn.Conv2d`` (no bias by default) with a quantised kernel and a quantised input."""

    def __init__(
        self,
        *args,
        weight_quantizer: WeightQuantizer | None = None,
        input_bits: int | None = None,
        double_quant: bool = False,
        scale_format: ScaleFormat = "pow2",
        scale_bits: int = 4,
        **kwargs,
    ) -> None:
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self._setup(weight_quantizer, input_bits, double_quant, scale_format, scale_bits)

    @property
    def depthwise(self) -> bool:
        """One filter per input channel (``groups == in_channels > 1``)."""
        return self.groups > 1 and self.groups == self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class PikeLinear(CostedLayer, nn.Linear):
    """``nn.Linear`` counterpart of ``PikeConv2d``."""

    def __init__(
        self,
        *args,
        weight_quantizer: WeightQuantizer | None = None,
        input_bits: int | None = None,
        double_quant: bool = False,
        scale_format: ScaleFormat = "pow2",
        scale_bits: int = 4,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._setup(weight_quantizer, input_bits, double_quant, scale_format, scale_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


# --- element-wise operations ---------------------------------------------------------------------


def fold_batch_norm(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(s, t)`` with ``bn(x) = s·x + t`` in eval mode: ``s = γ/√(σ²+ε)``, ``t = β − μ·s``
    (running statistics), what QuantNorm quantises."""
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"bn must be an nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn must keep running statistics (track_running_stats=True)")
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias.detach() - bn.running_mean * s


class QuantNorm(nn.Module):
    """Batch norm folded to ``y = s·x + t`` with ``s`` and ``t`` quantised during training.

    ``s = γ/√(σ²+ε)``, ``t = β − μ·s`` from the batch (training) or running (eval) statistics
    (``a`` and ``b`` in the code below), quantised in fixed point: ``s`` to ``norm_bits`` and ``t`` to
    ``bias_bits``, each on the smallest range ``2**e·(2**bits − 1) ≥ max|·|`` (a power-of-two scale, so inference is an
    integer multiply, an add and a shift), with ``estimator``'s backward.
    In eval mode the output differs from the folded float batch norm by at most
    ``|x|·δ_s + δ_t`` per element (``δ`` the two fixed-point steps, see ``quantization_error_bound``).
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(
        self,
        num_features: int,
        norm_bits: int = 8,
        bias_bits: int = 16,
        estimator: str | estimators.Estimator = "ste",
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_features = int_at_least("num_features", num_features, 1)
        self.norm_bits = check_bits(norm_bits)
        self.bias_bits = check_bits(bias_bits)
        self.estimator = estimators.get(estimator)
        self.eps = positive_number("eps", eps)
        self.momentum = positive_number("momentum", momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def folded(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The float per-channel scale ``a`` and bias ``b`` of the batch norm."""
        a = self.weight / torch.sqrt(var + self.eps)
        return a, self.bias - mean * a

    def ranges(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-point ranges (detached) of ``a`` and ``b``: power-of-two scales covering ``max|·|``."""
        tiny = torch.finfo(a.dtype).tiny * 2**16

        def fixed_point(v: torch.Tensor, bits: int) -> torch.Tensor:
            m = torch.clamp(v.detach().abs().max(), min=tiny)
            return range_of(double_quantize_scale(scale_of(m, bits), "pow2"), bits)

        return fixed_point(a, self.norm_bits), fixed_point(b, self.bias_bits)

    def quantized_affine(
        self, mean: torch.Tensor, var: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q(a), Q(b))``: what the layer multiplies and adds."""
        a, b = self.folded(mean, var)
        m_a, m_b = self.ranges(a, b)
        return (
            quantize_on_range(a, m_a, self.norm_bits, self.estimator),
            quantize_on_range(b, m_b, self.bias_bits, self.estimator),
        )

    def quantization_error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode bound on ``|QuantNorm(x) − BN(x)|`` per element: ``|x|·s_a + s_b``."""
        a, b = self.folded(self.running_mean, self.running_var)
        m_a, m_b = self.ranges(a, b)
        s_a, s_b = scale_of(m_a, self.norm_bits), scale_of(m_b, self.bias_bits)
        return x.abs() * s_a + s_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"x must be N×{self.num_features}×H×W, got shape {tuple(x.shape)}")
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        a, b = self.quantized_affine(mean, var)
        return x * a[None, :, None, None] + b[None, :, None, None]

    def ace_operations(self, inputs, output, name: str) -> list[Operation]:
        n = output.numel()
        return [
            Operation(name, "mul", n, (ACCUMULATOR_BITS, self.norm_bits), "batch norm"),
            Operation(name, "add", n, (ACCUMULATOR_BITS, self.bias_bits), "batch norm"),
            Operation(name, "shift", n, (ACCUMULATOR_BITS,), "batch norm"),
        ]

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, norm_bits={self.norm_bits}, bias_bits={self.bias_bits}, "
            f"estimator={self.estimator.name}"
        )


class ActQuant(nn.Module):
    """ReLU clipped at ``α`` and quantised to ``bits`` unsigned levels ``k·α/(2**bits − 1)`` (PACT).

    ``bits=None`` is a float ReLU. ``α`` is learned through the clip (PACT, Choi et al. 2018)
    unless ``learn_alpha`` is False; the rounding gets ``estimator``'s backward. With
    ``double_quant`` the step ``α/(2**bits − 1)`` is a power of two (or low-bit integer × power
    of two), straight-through for ``α``. At inference: a clip (two compares, on integers when
    ``integer_input``, i.e. after a QuantNorm), a multiply by ``1/step`` (costed at the conv that
    reads the output) and a round.
    """

    def __init__(
        self,
        bits: int | None,
        alpha: float = 4.0,
        learn_alpha: bool = True,
        estimator: str | estimators.Estimator = "ste",
        double_quant: bool = False,
        scale_format: ScaleFormat = "pow2",
        scale_bits: int = 4,
        integer_input: bool = False,
    ) -> None:
        super().__init__()
        self.bits = check_optional_bits("bits", bits)
        self.integer_input = bool(integer_input)
        initial = torch.tensor(positive_number("alpha", alpha))
        if learn_alpha and self.bits is not None:
            self.alpha = nn.Parameter(initial)
        else:
            self.register_buffer("alpha", initial)
        self.estimator = estimators.get(estimator)
        self.double_quant = bool(double_quant)
        self.scale_format = check_choice("scale_format", scale_format, SCALE_FORMATS)
        self.scale_bits = check_bits(scale_bits)

    def clip_level(self) -> torch.Tensor:
        """``α``, double-quantised (straight-through) when asked."""
        alpha = torch.clamp(self.alpha, min=1e-3)
        if not self.double_quant or self.bits is None:
            return alpha
        step = double_quantize_scale(
            alpha.detach() / (2**self.bits - 1),
            self.scale_format,
            self.scale_bits,
            rounding="round",
        )
        return alpha + (step * (2**self.bits - 1) - alpha).detach()

    def step(self) -> torch.Tensor:
        """The quantisation step ``α/(2**bits − 1)`` in use."""
        if self.bits is None:
            raise ValueError("a float ActQuant (bits=None) has no step")
        return self.clip_level().detach() / (2**self.bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits is None:
            return F.relu(x)
        alpha = self.clip_level()
        y = torch.minimum(F.relu(x), alpha)
        m = alpha.detach()
        # u = 2y/α − 1 lies in [−1, 1]; the course quantizer's levels there map to k·α/(2**b − 1)
        return m * (self.estimator.quantize(2 * y / m - 1, self.bits, 1.0) + 1) / 2

    def ace_operations(self, inputs, output, name: str) -> list[Operation]:
        """ReLU: one compare; clipped ReLU: two. The multiply onto the grid is costed by the
        conv that reads this output (role "quantise"), as ``qatcore.cost.ace`` does for any layer."""
        compares = 1 if self.bits is None else 2
        width = ACCUMULATOR_BITS if self.integer_input else FLOAT
        return [Operation(name, "compare", compares * output.numel(), (width,), "activation")]

    def extra_repr(self) -> str:
        if self.bits is None:
            return "float ReLU"
        dq = f", double_quant={self.scale_format}" if self.double_quant else ""
        return f"bits={self.bits}, estimator={self.estimator.name}{dq}"


def weight_kurtosis(w: torch.Tensor) -> float:
    """Excess kurtosis of a kernel's values (0 for a Gaussian, −1.2 for a uniform)."""
    x = w.detach().flatten().double()
    centred = x - x.mean()
    var = centred.pow(2).mean()
    return float(centred.pow(4).mean() / var.pow(2) - 3) if var > 0 else math.nan
