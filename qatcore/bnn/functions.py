"""Autograd Functions of the two BNN training algorithms: what each keeps for backward, and its backward.

*Standard* (Courbariaux & Bengio): every saved variable in float32 — a binary layer keeps its
input ``X`` (``sign(X)`` for binary inputs), a sign activation its STE mask ``1[|x| ≤ 1]``, a
max-pool its switch mask; ``dW = dYᵀ·X`` masked by ``|w| < 1``. (Batch norm is torch's own.)

*Low-memory* (Wang et al., 2023): binary layer inputs kept as packed sign bits (the first layer's
full-precision input as it is), masks as packed bits, l1 batch norm keeping packed ``sign(x̂)`` and
the per-channel ``mean|x̂|`` and ``σ``; the upstream gradient ``dY`` is quantised to powers of two
(``po2_quantize``), ``dW = (1/√N)·sign(sign(X)ᵀ·dY) ⊙ 1[|w| ≤ 1]`` and weights are float16
(cast to float32 for the CPU's arithmetic).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd import Function

from qatcore.bnn.packing import pack_bits, pack_signs, unpack_bits, unpack_signs

PO2_EXPONENT_BITS = 4  # sign + 4-bit exponent: exponents −8 … 7
PO2_HEADROOM = 8  # the largest |dY| is scaled to about 2**8 before quantising
# float32 bits: |v| rounds up to the next power of two in the log domain iff its mantissa is >= √2
_ROUND_UP = (1 << 23) - 0x3504F4  # 0x3504F4 = ceil((√2 − 1)·2**23)


def sign(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` as float32 ±1 with ``sign(0) = +1`` (as ``qatcore.quantizers.sign``, in two passes)."""
    return (x >= 0).to(torch.float32).mul_(2).sub_(1)


class DenseOp:
    """``y = x·Wᵀ`` and its two gradients."""

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w)

    def input_grad(self, dy: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        return dy @ w

    def weight_grad(self, x: torch.Tensor, dy: torch.Tensor, w_shape) -> torch.Tensor:
        return dy.transpose(0, 1) @ x


class ConvOp:
    """A 2-D convolution (no bias, groups 1) with its two gradients."""

    def __init__(self, stride, padding) -> None:
        self.stride, self.padding = stride, padding

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, stride=self.stride, padding=self.padding)

    def input_grad(self, dy: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        return torch.nn.grad.conv2d_input(x_shape, w, dy, stride=self.stride, padding=self.padding)

    def weight_grad(self, x: torch.Tensor, dy: torch.Tensor, w_shape) -> torch.Tensor:
        return torch.nn.grad.conv2d_weight(x, w_shape, dy, stride=self.stride, padding=self.padding)


def po2_quantize(dy: torch.Tensor) -> torch.Tensor:
    """Power-of-two gradient: scale by ``2^bias`` (``bias = −round(log2 max|dY|) + 8``), keep the sign
    and ``2^clip(round(log2|·|), −8, 7)``, scale back. Zeros stay zero (the authors' code adds a tiny
    bias that turns them into ``+2^−8`` before scaling back).

    Computed on the float32 bit patterns: ``round(log2|v|)`` is the exponent field, plus one when
    the mantissa is at least √2, so no logarithm is evaluated and no rounding error can creep in.
    When the clipped exponents leave float32's normal range (a subnormal or a huge largest |dY|),
    the same rule runs on float64 exponents and the result rounds to float32 once.
    """
    dy = dy.to(torch.float32).contiguous()
    top = float(dy.abs().max())
    if not math.isfinite(top) or top == 0:
        return torch.zeros_like(dy)
    bias = PO2_HEADROOM - _round_log2(top)
    lowest, highest = -(2 ** (PO2_EXPONENT_BITS - 1)), 2 ** (PO2_EXPONENT_BITS - 1) - 1
    low, high = 127 + lowest - bias, 127 + highest - bias
    if low < 1 or high > 254:
        return _po2_quantize_wide(dy, bias, lowest, highest)
    bits = dy.view(torch.int32)
    magnitude = bits & 0x7FFFFFFF
    exponent = ((magnitude + _ROUND_UP) >> 23).clamp_(low, high)
    out = (exponent << 23).bitwise_or_(bits & -0x80000000)
    return out.mul_(magnitude != 0).view(torch.float32)


def _round_log2(value: float) -> int:
    """``round(log2 value)`` for a positive finite float, exactly: ``value = m·2^e`` with m in [½, 1)."""
    mantissa, exponent = math.frexp(value)
    return exponent - (mantissa < math.sqrt(0.5))


def _po2_quantize_wide(dy: torch.Tensor, bias: int, lowest: int, highest: int) -> torch.Tensor:
    """``po2_quantize`` on float64 exponents, for maxima whose outputs leave float32's normal range."""
    wide = dy.to(torch.float64)
    mantissa, exponent = torch.frexp(wide.abs())
    rounded = exponent - (mantissa < math.sqrt(0.5)).to(exponent.dtype)
    kept = (rounded + bias).clamp_(lowest, highest) - bias
    out = torch.ldexp(torch.sign(wide), kept.to(torch.float64))
    return out.to(torch.float32)


def _binary_input(x: torch.Tensor, binary_input: bool) -> torch.Tensor:
    return sign(x) if binary_input else x


class StandardBinaryLayer(Function):
    """``y = op(sign(x) or x, sign(W))`` keeping the float32 layer input; ``dW = op'(X, dY) ⊙ 1[|w| < 1]``
    (no mask with ``clip=False``, for Bop's ±1 weights).

    The input's own sign (binary layers) passes the gradient straight through: the clipping STE
    lives in the sign activation before the layer.
    """

    @staticmethod
    def forward(ctx, x, weight, op, binary_input, clip=True):
        xb = _binary_input(x, binary_input)
        ctx.op, ctx.x_shape, ctx.clip = op, x.shape, clip
        ctx.save_for_backward(xb, weight)
        return op(xb, sign(weight))

    @staticmethod
    def backward(ctx, dy):
        xb, weight = ctx.saved_tensors
        dx = ctx.op.input_grad(dy, sign(weight), ctx.x_shape) if ctx.needs_input_grad[0] else None
        dw = ctx.op.weight_grad(xb, dy, weight.shape)
        return dx, dw.mul_(weight.abs() < 1) if ctx.clip else dw, None, None, None


GRADIENT_FORMATS = ("po2", "float16")


def quantize_gradient(dy: torch.Tensor, gradient: str) -> torch.Tensor:
    """The low-memory mode's ``dY``: powers of two (``"po2"``, ``po2_quantize``) or rounded to float16."""
    if gradient == "po2":
        return po2_quantize(dy)
    if gradient == "float16":
        return dy.to(torch.float16).to(torch.float32)
    raise ValueError(f"gradient must be one of {GRADIENT_FORMATS}, got {gradient!r}")


def weight_gradient(weight: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor | None:
    """float32 ``dW`` of the flattened ``weight[start:stop]``: its ``.grad``, or, when the low-memory layer
    kept only sign bits (``weight.grad_bits``), ``(1/√N)·sign ⊙ 1[|w| ≤ 1]`` (no mask for ``clip=False``).
    ``start`` must be a multiple of 8. None when the weight has no gradient."""
    if weight.grad is not None:
        return weight.grad.view(-1)[start:stop].float()
    bits = getattr(weight, "grad_bits", None)
    if bits is None:
        return None
    stop = weight.numel() if stop is None else min(stop, weight.numel())
    g = unpack_signs(bits[start // 8 : -(-stop // 8)], (stop - start,)).mul_(1 / math.sqrt(weight.numel()))
    if getattr(weight, "grad_clip", True):
        g.mul_(weight.detach().view(-1)[start:stop].abs() <= 1)
    return g


def clear_weight_gradient(weight: torch.Tensor) -> None:
    """Drop the 1-bit gradient a low-memory layer left on ``weight`` (the optimiser has used it)."""
    weight.grad_bits = None


class LowMemoryBinaryLayer(Function):
    """The paper's binary layer: keeps packed ``sign(X)`` (first layer: ``X``), quantises ``dY``
    (``quantize_gradient``), ``dW = (1/√N)·sign(sign(X)ᵀ·dY) ⊙ 1[|w| ≤ 1]``.

    With ``bit_gradients`` (the authors' choice) only the packed signs of ``dW`` are kept, on
    ``weight.grad_bits`` (the optimiser reads them with ``weight_gradient``; autograd sees no gradient);
    without, ``dW`` is returned in the weight's dtype (float16), as data-parallel training needs.
    """

    @staticmethod
    def forward(ctx, x, weight, op, binary_input, clip=True, gradient="po2", bit_gradients=False):
        ctx.op, ctx.x_shape, ctx.binary_input = op, x.shape, binary_input
        ctx.clip, ctx.gradient, ctx.bit_gradients = clip, gradient, bit_gradients
        ctx.parameter = weight if bit_gradients else None  # where the sign bits of dW go
        kept = pack_signs(x) if binary_input else x
        ctx.save_for_backward(kept, weight)
        return op(_binary_input(x, binary_input), sign(weight).to(x.dtype))

    @staticmethod
    def backward(ctx, dy):
        kept, weight = ctx.saved_tensors
        dyq = quantize_gradient(dy, ctx.gradient)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = ctx.op.input_grad(dyq, sign(weight).to(dyq.dtype), ctx.x_shape)
        x = unpack_signs(kept, ctx.x_shape) if ctx.binary_input else kept.to(dyq.dtype)
        up = ctx.op.weight_grad(x, dyq, weight.shape) >= 0  # sign(sign(X)ᵀ·dY), sign(0) = +1
        if ctx.bit_gradients:
            ctx.parameter.grad_bits, ctx.parameter.grad_clip = pack_bits(up), ctx.clip
            return dx, None, None, None, None, None, None
        dw = up.to(weight.dtype).mul_(2).sub_(1).mul_(1 / math.sqrt(weight.numel()))
        return dx, dw.mul_(weight.abs() <= 1) if ctx.clip else dw, None, None, None, None, None


def _keep_mask(ctx, mask: torch.Tensor, packed: bool) -> None:
    ctx.mask_shape, ctx.packed = mask.shape, packed
    ctx.save_for_backward(pack_bits(mask) if packed else mask.to(torch.float32))


def _mask(ctx, dtype: torch.dtype) -> torch.Tensor:
    (kept,) = ctx.saved_tensors
    return unpack_bits(kept, ctx.mask_shape).to(dtype) if ctx.packed else kept.to(dtype)


class SignSTE(Function):
    """``sign(x)`` (``sign(0) = +1``) with the straight-through gradient ``dy ⊙ 1[|x| ≤ 1]``; the
    mask is kept in float32 (standard) or packed bits (low-memory)."""

    @staticmethod
    def forward(ctx, x, packed):
        _keep_mask(ctx, x.abs() <= 1, packed)
        return sign(x)

    @staticmethod
    def backward(ctx, dy):
        return dy * _mask(ctx, dy.dtype), None


class MaxPool2x2(Function):
    """2×2 max-pooling, stride 2, keeping only the switch mask (one marked input per window, the
    first maximum as torch picks it): float32 (standard) or packed bits (low-memory)."""

    @staticmethod
    def forward(ctx, x, packed):
        y, index = F.max_pool2d(x, 2, 2, return_indices=True)
        switches = x.new_zeros(x.shape[:2] + (x.shape[2] * x.shape[3],), dtype=torch.bool)
        switches.scatter_(2, index.flatten(2), True)
        _keep_mask(ctx, switches.view(x.shape), packed)
        return y

    @staticmethod
    def backward(ctx, dy):
        spread = dy.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        height, width = ctx.mask_shape[2:]
        spread = F.pad(spread, (0, width - spread.shape[3], 0, height - spread.shape[2]))
        return spread * _mask(ctx, dy.dtype), None


def channel_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The dimensions batch norm averages over: all but the channel dimension 1."""
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.view((1, -1) + (1,) * (x.dim() - 2))


def l1_batch_norm_backward(
    dy: torch.Tensor, sign_xhat: torch.Tensor, mean_abs_xhat: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """``dx = dy/σ − mean(dy/σ) − sign(x̂)·mean(sign(x̂)·dy/σ)·mean|x̂|`` (per-channel means)."""
    dims = channel_dims(dy)
    scaled = dy / _per_channel(sigma, dy)
    centred = scaled - scaled.mean(dims, keepdim=True)
    return centred - sign_xhat * (sign_xhat * scaled).mean(dims, keepdim=True) * _per_channel(mean_abs_xhat, dy)


class L1BatchNorm(Function):
    """The paper's l1 batch norm in training: ``μ = mean(x)``, ``σ = mean|x − μ|`` (both rounded to
    float16), output ``(x − μ)/σ + β``; keeps packed ``sign(x̂)``, ``mean|x̂|`` and ``σ`` (float16).
    Returns the output and the batch's ``μ`` and ``σ`` (for the running statistics)."""

    @staticmethod
    def forward(ctx, x, beta):
        dims = channel_dims(x)
        mu = x.mean(dims).half().float()
        xhat = x - _per_channel(mu, x)
        sigma = xhat.abs().mean(dims).half().float().clamp_min(torch.finfo(torch.float16).tiny)
        xhat.div_(_per_channel(sigma, x))
        ctx.x_shape, ctx.beta_dtype = x.shape, beta.dtype
        ctx.save_for_backward(pack_signs(xhat), xhat.abs().mean(dims).half(), sigma.half())
        ctx.mark_non_differentiable(mu, sigma)
        return xhat + _per_channel(beta.float(), x), mu, sigma

    @staticmethod
    def backward(ctx, dy, _dmu, _dsigma):
        kept_signs, mean_abs, sigma = ctx.saved_tensors
        dy = dy.half().float()  # the authors keep dX in float16
        sign_xhat = unpack_signs(kept_signs, ctx.x_shape)
        dx = l1_batch_norm_backward(dy, sign_xhat, mean_abs.float(), sigma.float())
        return dx, dy.sum(channel_dims(dy)).to(ctx.beta_dtype)
