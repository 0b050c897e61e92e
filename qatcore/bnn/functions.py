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

import contextlib
import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.nn import grad as conv_grad

from qatcore.bnn import packing
from qatcore.bnn.packing import (
    pack_bits,
    pack_signs,
    pack_within_one,
    packed_size,
    unpack_bits,
    unpack_signs,
)
from qatcore.checks import check_choice

PO2_EXPONENT_BITS = 4  # sign + 4-bit exponent: exponents −8 … 7
PO2_HEADROOM = 8  # the largest |dY| is scaled to about 2**8 before quantising
# float32 bits: |v| rounds up to the next power of two in the log domain iff its mantissa is >= √2
_ROUND_UP = (1 << 23) - 0x3504F4  # 0x3504F4 = ceil((√2 − 1)·2**23)


_ONE = torch.ones(())


def allocating_on(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which torch's factories (``empty``, ``zeros``, ``arange``, ``tensor``…) make their tensors on
    ``device``, the device of the step's own tensors: a step's buffers then follow it onto a GPU. Where ``device``
    is already the default, nothing is entered, and the step pays nothing for it."""
    device = torch.device(device)
    return contextlib.nullcontext() if device == torch.get_default_device() else device


def sign(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` as float32 ±1 with ``sign(0) = sign(−0) = +1``, as ``qatcore.quantizers.sign`` for every
    number, NaN included (a NaN gives its sign bit: ``float("nan")`` +1, ``-float("nan")`` −1):
    ``copysign(1, x + 0)``, where adding ``+0`` turns ``−0`` into ``+0``.
    Arithmetic passes only (a float16 ``x`` is widened first): the CPU compares far more slowly than it adds."""
    x = x.detach()
    wide = x + 0.0 if x.dtype == torch.float32 else x.float().add_(0.0)
    return torch.copysign(_ONE, wide, out=wide)


def within_one(w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``1[|w| ≤ 1]`` as float32 ones and zeros, in ``out`` (of ``w``'s shape) if given; float16 through its
    bit pattern (magnitude bits at most those of 1.0, ``0x3C00``). The CPU writes a comparison's float32
    result several times faster than a bool one (a float16 one several times more slowly: ``keep_within_one``)."""
    half = w.dtype == torch.float16
    magnitude = w.view(torch.int16) & 0x7FFF if half else w.abs()
    out = torch.empty(w.shape, dtype=torch.float32, device=w.device) if out is None else out
    return torch.le(magnitude, 0x3C00 if half else 1, out=out)


def keep_within_one(
    g: torch.Tensor, w: torch.Tensor, row: torch.Tensor | None = None
) -> torch.Tensor:
    """``g ⊙ 1[|w| ≤ 1]`` in ``g``; ``row`` is scratch of ``g``'s length and dtype. A float16 ``g`` beside a
    float16 ``w`` is cleared through bit patterns: ``(|w|'s bits − 0x3C01) >> 15`` is all ones where
    ``|w| ≤ 1`` and zero elsewhere (NaN included), and ``g``'s bits are ANDed with it (the CPU compares into
    float16 several times more slowly)."""
    if g.dtype == w.dtype == torch.float16:
        keep = (
            torch.empty(w.shape, dtype=torch.int16, device=w.device)
            if row is None
            else row.view(torch.int16)
        )
        # on the CPU, the same integer operations in NumPy, which calls them faster
        arrays = [_bits16(t) for t in (w, g, keep)]
        if all(a is not None for a in arrays):
            w16, g16, k = cast(list[np.ndarray], arrays)
            np.bitwise_and(w16, 0x7FFF, out=k)
            np.right_shift(np.subtract(k, 0x3C01, out=k), 15, out=k)
            np.bitwise_and(g16, k, out=g16)
            return g
        torch.bitwise_and(w.view(torch.int16), 0x7FFF, out=keep).sub_(0x3C01).bitwise_right_shift_(
            15
        )
        g.view(torch.int16).bitwise_and_(keep)
        return g
    return g.mul_(within_one(w, row))


def _bits16(t: torch.Tensor) -> np.ndarray | None:
    """A 16-bit CPU tensor's bit patterns as a NumPy int16 array on its memory; None on other devices."""
    return packing.as_numpy(t.view(torch.int16))


class DenseOp:
    """``y = x·Wᵀ`` and its two gradients."""

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w)

    def input_grad(self, dy: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        return dy @ w

    def weight_grad(self, x: torch.Tensor, dy: torch.Tensor, w_shape) -> torch.Tensor:
        return dy.transpose(0, 1) @ x

    def output_shape(self, x_shape, w_shape) -> tuple[int, ...]:
        return (x_shape[0], w_shape[0])


class ConvOp:
    """A 2-D convolution (no bias, groups 1) with its two gradients."""

    def __init__(self, stride, padding) -> None:
        self.stride, self.padding = stride, padding

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, stride=self.stride, padding=self.padding)

    def input_grad(self, dy: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        return conv_grad.conv2d_input(x_shape, w, dy, stride=self.stride, padding=self.padding)

    def weight_grad(self, x: torch.Tensor, dy: torch.Tensor, w_shape) -> torch.Tensor:
        return conv_grad.conv2d_weight(x, w_shape, dy, stride=self.stride, padding=self.padding)

    def output_shape(self, x_shape, w_shape) -> tuple[int, ...]:
        sides = [
            (n + 2 * p - k) // s + 1
            for n, k, s, p in zip(
                x_shape[2:], w_shape[2:], _pair(self.stride), _pair(self.padding), strict=True
            )
        ]
        return (x_shape[0], w_shape[0], *sides)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def po2_quantize(
    dy: torch.Tensor, top: float | None = None, known_finite: bool = False, overwrite: bool = False
) -> torch.Tensor:
    """Power-of-two gradient: scale by ``2^bias`` (``bias = −round(log2 max|dY|) + 8``), keep the sign
    and ``2^clip(round(log2|·|), −8, 7)``, scale back. Zeros stay zero (the authors' code adds a tiny
    bias that turns them into ``+2^−8`` before scaling back).

    Computed on the float32 bit patterns: ``round(log2|v|)`` is the exponent field, plus one when
    the mantissa is at least √2, so no logarithm is evaluated and no rounding error can creep in.
    When the clipped exponents leave float32's normal range (a subnormal or a huge largest |dY|),
    the same rule runs on float64 exponents and the result rounds to float32 once. ``top`` is
    ``max|dY|`` when ``dy`` is one chunk of a larger gradient (default: ``dy``'s own). NaN and ±inf
    entries pass through unchanged (never 0); the finite ones are scaled by ``top`` when it is finite,
    else by their own largest magnitude. ``known_finite`` skips the pass that looks for them (the caller
    has found none). ``overwrite`` lets it use a float32 ``dy``'s memory (one temporary fewer).
    """
    dy = dy.to(torch.float32).contiguous()
    if top is not None and (isinstance(top, bool) or not isinstance(top, int | float) or top < 0):
        raise ValueError(f"top (max|dY|) must be a number >= 0, got {top!r}")
    given, top = top, largest_magnitude(dy) if top is None else float(top)
    if not math.isfinite(top) or (
        given is not None and not known_finite and not bool(torch.isfinite(dy).all())
    ):
        finite = torch.isfinite(dy)  # NaN or ±inf in dy: they pass through, the rest is scaled
        inner = top if math.isfinite(top) else largest_magnitude(dy[finite])
        return torch.where(finite, po2_quantize(torch.where(finite, dy, 0.0), inner), dy)
    if top == 0:
        return torch.zeros_like(dy)
    low, high = po2_exponent_range(top)
    if low < 1 or high > 254:
        lowest, highest = -(2 ** (PO2_EXPONENT_BITS - 1)), 2 ** (PO2_EXPONENT_BITS - 1) - 1
        return _po2_quantize_wide(dy, 127 + lowest - low, lowest, highest)
    magnitude = dy.view(torch.int32) & 0x7FFFFFFF
    exponent = magnitude if overwrite else magnitude.clone()
    out = (
        exponent.add_(_ROUND_UP).bitwise_right_shift_(23).clamp_(low, high).bitwise_left_shift_(23)
    )
    out = out.view(torch.float32).copysign_(dy)
    # zeros stay zero
    nonzero = dy.view(torch.int32).bitwise_and_(0x7FFFFFFF) if overwrite else magnitude
    return out.view(torch.int32).mul_(nonzero.clamp_(max=1)).view(torch.float32)


def po2_exponent_range(top: float) -> tuple[int, int]:
    """The float32 exponent fields (biased by 127) of the smallest and largest magnitudes ``po2_quantize``
    gives a gradient whose ``max|dY|`` is ``top`` (positive, finite): 16 consecutive powers of two. Outside
    1 … 254 they are not normal float32 numbers (``po2_quantize`` then works on float64)."""
    bias = PO2_HEADROOM - _round_log2(top)
    lowest, highest = -(2 ** (PO2_EXPONENT_BITS - 1)), 2 ** (PO2_EXPONENT_BITS - 1) - 1
    return 127 + lowest - bias, 127 + highest - bias


def largest_magnitude(x: torch.Tensor) -> float:
    """``max|x|`` without a temporary copy of ``x``."""
    if not x.numel():
        return 0.0
    low, high = torch.aminmax(x)
    return max(float(high), -float(low))


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


def quantize_gradient(
    dy: torch.Tensor,
    gradient: str,
    top: float | None = None,
    known_finite: bool = False,
    overwrite: bool = False,
) -> torch.Tensor:
    """The low-memory mode's ``dY``: powers of two (``"po2"``, ``po2_quantize``, relative to ``top``) or
    rounded to float16."""
    if check_choice("gradient", gradient, GRADIENT_FORMATS) == "po2":
        return po2_quantize(dy, top, known_finite, overwrite)
    return dy.to(torch.float16).to(torch.float32)


#: values of a binary layer's input per chunk of the batch in the low-memory mode: the forward and
#: backward work on this many input values at a time, which bounds their float32 working copies
#: (a 3×3 convolution's weight gradient may unfold its chunk nine-fold)
CHUNK_VALUES = 1 << 19


def batch_chunks(x_shape, values: int | None = None, y_shape=None):
    """``(start, stop)`` row ranges of the batch, each of about ``values`` (``CHUNK_VALUES``) values of the
    input (or of ``y_shape``'s tensor, the output, where an example has more of those); at least one row."""
    values = CHUNK_VALUES if values is None else values
    per_example = max(math.prod(x_shape[1:]), math.prod(y_shape[1:]) if y_shape is not None else 0)
    rows = max(1, values // max(per_example, 1))
    return [(i, min(i + rows, x_shape[0])) for i in range(0, x_shape[0], rows)]


def unpack_rows(
    packed: torch.Tensor, shape, start: int, stop: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Rows ``start:stop`` of the ±1 tensor of ``shape`` packed by ``pack_signs``, or of the bits packed by
    ``pack_bits`` as ``dtype`` (``unpack_bits``), unpacking only their bytes."""
    per_example = math.prod(shape[1:])
    first, last = start * per_example, stop * per_example
    window = packed[first // 8 : -(-last // 8)]
    size = (window.numel() * 8,)
    flat = unpack_signs(window, size) if dtype is None else unpack_bits(window, size, dtype)
    return flat[first % 8 : first % 8 + last - first].view((stop - start, *shape[1:]))


def weight_gradient(
    weight: torch.Tensor,
    start: int = 0,
    stop: int | None = None,
    work: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor | None:
    """``scale·dW`` of the flattened ``weight[start:stop]``: its ``.grad``, or, when the low-memory layer kept
    only sign bits (``weight.grad_bits``), ``(1/√N)·sign ⊙ 1[|w| ≤ 1]`` (no mask for ``clip=False``); float32,
    or ``work``'s dtype. ``start`` must be a multiple of 8. With ``work`` (two rows of at least ``stop − start``
    values, rounded up to a multiple of 8), ``dW`` is written into its first row, the mask into its second,
    and nothing is allocated. None when the weight has no gradient."""
    if weight.grad is not None:
        grad = weight.grad.view(-1)[start:stop]
        g = grad.float() if work is None else work[0, : grad.numel()].copy_(grad)
        return g if scale == 1 else g.mul_(scale)
    bits = getattr(weight, "grad_bits", None)
    if bits is None:
        return None
    stop = weight.numel() if stop is None else min(stop, weight.numel())
    n = stop - start
    g = unpack_signs(
        bits[start // 8 : -(-stop // 8)],
        (n,),
        scale / math.sqrt(weight.numel()),
        None if work is None else work[0],
    )
    if getattr(weight, "grad_clip", True):
        keep_within_one(g, weight.data.view(-1)[start:stop], None if work is None else work[1, :n])
    return g


def clear_weight_gradient(weight: torch.Tensor) -> None:
    """Drop the 1-bit gradient a low-memory layer left on ``weight`` (the optimiser has used it)."""
    weight.grad_bits = None  # type: ignore[attr-defined]  # the tensor's own attribute, set in backward


#: values of a dense layer's float32 ``dW`` made at a time (when its batch is one chunk)
WEIGHT_BLOCK = 1 << 16


def dense_sign_bits(x: torch.Tensor, dy: torch.Tensor, w_shape) -> torch.Tensor:
    """Packed ``sign(dYᵀ·X)`` (``sign(0) = +1``, as ``pack_signs``) of a dense layer, made ``WEIGHT_BLOCK``
    values of rows at a time (a multiple of 8 rows, so each block fills whole bytes)."""
    out_features, in_features = w_shape
    rows = max(8, WEIGHT_BLOCK // in_features // 8 * 8)
    bits = torch.empty(packed_size(out_features * in_features), dtype=torch.uint8, device=x.device)
    dyt = dy.transpose(0, 1)
    for r in range(0, out_features, rows):
        block = pack_signs(dyt[r : r + rows] @ x)
        bits[r * in_features // 8 : r * in_features // 8 + block.numel()] = block
    return bits


class LowMemoryBinaryLayer(Function):
    """The paper's binary layer: keeps packed ``sign(X)`` (first layer: ``X``), quantises ``dY``
    (``quantize_gradient``), ``dW = (1/√N)·sign(sign(X)ᵀ·dY) ⊙ 1[|w| ≤ 1]``.

    With ``bit_gradients`` (the authors' choice) only the packed signs of ``dW`` are kept, on
    ``weight.grad_bits`` (the optimiser reads them with ``weight_gradient``; autograd sees no gradient);
    without, ``dW`` is returned in the weight's dtype (float16), as data-parallel training needs.
    Forward and backward run over chunks of the batch (``batch_chunks``), so their working copies are
    bounded whatever the batch: only ``y``, ``dX`` and the float32 sum behind ``sign(dW)`` are whole (a
    dense layer whose batch is one chunk makes that sum a block of rows at a time: ``dense_sign_bits``).
    """

    @staticmethod
    def forward(ctx, x, weight, op, binary_input, clip=True, gradient="po2", bit_gradients=False):
        ctx.op, ctx.x_shape, ctx.binary_input = op, x.shape, binary_input
        ctx.clip, ctx.gradient, ctx.bit_gradients = clip, gradient, bit_gradients
        ctx.parameter = weight if bit_gradients else None  # where the sign bits of dW go
        kept = pack_signs(x) if binary_input else x
        ctx.save_for_backward(kept, weight)
        w, out = sign(weight), None
        chunks = batch_chunks(x.shape, y_shape=op.output_shape(x.shape, weight.shape))
        if len(chunks) == 1:
            return op(_binary_input(x, binary_input), w)
        for i, j in chunks:
            y = op(_binary_input(x[i:j], binary_input), w)
            out = y.new_empty((x.shape[0], *y.shape[1:])) if out is None else out
            out[i:j] = y
        return out

    @staticmethod
    def backward(ctx, dy):
        kept, weight = ctx.saved_tensors
        top = largest_magnitude(dy)
        chunks = batch_chunks(ctx.x_shape, y_shape=dy.shape)
        whole = len(chunks) == 1  # one chunk: dX is the input gradient itself, not a copy of it
        dx = dy.new_empty(ctx.x_shape) if ctx.needs_input_grad[0] and not whole else None
        w = sign(weight) if ctx.needs_input_grad[0] else None
        total = None
        finite = math.isfinite(top)  # a NaN or ±inf in dy makes its largest magnitude one too
        for i, j in chunks:
            dyq = quantize_gradient(dy if whole else dy[i:j], ctx.gradient, top, finite)
            if w is not None:
                part = ctx.op.input_grad(dyq, w, (j - i, *ctx.x_shape[1:]))
                if whole:
                    dx = part
                else:
                    dx[i:j] = part
            if ctx.binary_input:
                x = (
                    unpack_signs(kept, ctx.x_shape)
                    if whole
                    else unpack_rows(kept, ctx.x_shape, i, j)
                )
            else:
                x = kept.float() if whole else kept[i:j].float()
            if (
                whole
                and ctx.bit_gradients
                and isinstance(ctx.op, DenseOp)
                and weight.numel() > WEIGHT_BLOCK
            ):
                ctx.parameter.grad_bits, ctx.parameter.grad_clip = (
                    dense_sign_bits(x, dyq, weight.shape),
                    ctx.clip,
                )
                return dx, None, None, None, None, None, None
            part = ctx.op.weight_grad(x, dyq, weight.shape)
            total = part if total is None else total.add_(part)
            del x, dyq, part
        del w
        if ctx.bit_gradients:  # sign(sign(X)ᵀ·dY), sign(0) = +1
            ctx.parameter.grad_bits, ctx.parameter.grad_clip = pack_signs(total), ctx.clip
            return dx, None, None, None, None, None, None
        up = total >= 0
        del total
        dw = up.to(weight.dtype).mul_(2).sub_(1).mul_(1 / math.sqrt(weight.numel()))
        return dx, dw.mul_(within_one(weight)) if ctx.clip else dw, None, None, None, None, None


def _keep_mask(ctx, mask: torch.Tensor, packed: bool) -> None:
    ctx.mask_shape, ctx.packed = mask.shape, packed
    ctx.save_for_backward(pack_bits(mask) if packed else mask.to(torch.float32))


def _masked(ctx, dy: torch.Tensor) -> torch.Tensor:
    """``dy ⊙ mask``: a float32 product, with the mask kept in float32 (standard) or unpacked from its bits
    into uint8 ones and zeros, one chunk of the batch at a time (low-memory; the CPU multiplies far faster
    than it selects through bools)."""
    (kept,) = ctx.saved_tensors
    if not ctx.packed:
        return dy * kept.to(dy.dtype)
    chunks = batch_chunks(ctx.mask_shape)
    if len(chunks) == 1:
        return dy * unpack_bits(kept, ctx.mask_shape, torch.uint8)
    out = torch.empty_like(dy)
    for i, j in chunks:  # the mask one chunk of the batch at a time
        torch.mul(dy[i:j], unpack_rows(kept, ctx.mask_shape, i, j, torch.uint8), out=out[i:j])
    return out


class SignSTE(Function):
    """``sign(x)`` (``sign(0) = +1``) with the straight-through gradient ``dy ⊙ 1[|x| ≤ 1]``; the
    mask is kept in float32 (standard) or packed bits (low-memory)."""

    @staticmethod
    def forward(ctx, x, packed):
        ctx.mask_shape, ctx.packed = x.shape, packed
        ctx.save_for_backward(pack_within_one(x) if packed else (x.abs() <= 1).float())
        return sign(x)

    @staticmethod
    def backward(ctx, dy):
        return _masked(ctx, dy), None


class MaxPool2x2(Function):
    """2×2 max-pooling, stride 2, keeping only the switch mask (one marked input per window, the
    first maximum as torch picks it): float32 (standard) or packed bits (low-memory)."""

    @staticmethod
    def forward(ctx, x, packed):
        y, switches = max_pool_switches(x)
        _keep_mask(ctx, switches, packed)
        return y

    @staticmethod
    def backward(ctx, dy):
        return _masked(ctx, spread_over_windows(dy, ctx.mask_shape)), None


def max_pool_switches(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2×2 max-pooling, stride 2: the pooled tensor and the boolean switch mask of ``x``'s shape (one marked
    input per window, the first maximum as torch picks it)."""
    y, index = F.max_pool2d(x, 2, 2, return_indices=True)
    switches = x.new_zeros(x.shape[:2] + (x.shape[2] * x.shape[3],), dtype=torch.bool)
    switches.scatter_(2, index.flatten(2), True)
    return y, switches.view(x.shape)


def spread_over_windows(dy: torch.Tensor, shape) -> torch.Tensor:
    """Each value of a 2×2-pooled gradient copied over its window, padded to the pool's input ``shape``
    (odd sides); the switch mask then keeps the one input that was the maximum."""
    spread = F.interpolate(dy, scale_factor=2, mode="nearest")
    height, width = shape[2:]
    if (height, width) != spread.shape[2:]:
        spread = F.pad(spread, (0, width - spread.shape[3], 0, height - spread.shape[2]))
    return spread


def channel_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The dimensions batch norm averages over: all but the channel dimension 1."""
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.view((1, -1) + (1,) * (x.dim() - 2))


def l1_batch_norm_backward(
    dy: torch.Tensor,
    sign_xhat: torch.Tensor,
    mean_abs_xhat: torch.Tensor,
    sigma: torch.Tensor,
    inplace: bool = False,
    total: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dx = dy/σ − mean(dy/σ) − sign(x̂)·mean(sign(x̂)·dy/σ)·mean|x̂|`` (per-channel means).

    ``sign_xhat`` is a ±1 tensor, or the packed bits of one (``pack_signs``), unpacked here one chunk of
    the batch at a time; the result is built in place in one float32 copy of ``dy`` (in ``dy`` itself
    with ``inplace``). ``total``: ``channel_sum(dy)``, where the caller has it."""
    count = dy.numel() // dy.shape[1]
    packed = sign_xhat.dtype == torch.uint8
    chunks = batch_chunks(dy.shape)

    def signs(i: int, j: int) -> torch.Tensor:
        if not packed:
            return sign_xhat[i:j]
        return (
            unpack_signs(sign_xhat, dy.shape)
            if len(chunks) == 1
            else unpack_rows(sign_xhat, dy.shape, i, j)
        )

    inverse = _per_channel(sigma, dy).reciprocal()
    total = channel_sum(dy) if total is None else total
    mean = _per_channel((total / count).float(), dy)
    shift = mean.mul_(inverse).neg_()  # −mean(dy/σ)
    whole = signs(0, dy.shape[0]) if len(chunks) == 1 else None  # the signs unpacked once
    correlation = channel_sum(dy, signs=signs if whole is None else lambda i, j: whole[i:j])
    slope = (
        _per_channel(correlation.float(), dy)
        .mul_(inverse)
        .mul_(_per_channel(mean_abs_xhat, dy) / -count)
    )  # −mean(sign(x̂)·dy/σ)·mean|x̂|
    dx = torch.addcmul(shift, dy, inverse, out=dy if inplace else None)
    if whole is not None:
        return dx.addcmul_(whole, slope)
    for i, j in chunks:
        dx[i:j].addcmul_(signs(i, j), slope)
    return dx


def channel_sum(x: torch.Tensor, absolute: bool = False, signs=None) -> torch.Tensor:
    """Per-channel ``Σx`` (``Σ|x|`` with ``absolute``; ``Σ signs(i, j)·x`` with a function giving the rows of a
    ±1 tensor) over the batch and positions, in float64, one chunk of the batch at a time. Every batch-norm
    statistic is such a sum: float64 makes it exact for the values training meets (integers, float16 numbers),
    so it does not depend on how the batch is cut into chunks."""
    dims, chunks = channel_dims(x), batch_chunks(x.shape)
    total = None
    for i, j in chunks:
        part = x if len(chunks) == 1 else x[i:j]
        if absolute:
            part = part.abs()
        if signs is not None:
            part = signs(i, j) * part
        partial = part.sum(dims, dtype=torch.float64)
        total = partial if total is None else total.add_(partial)
    assert total is not None  # a batch has at least one row
    return total


class L1BatchNorm(Function):
    """The paper's l1 batch norm in training: ``μ = mean(x)``, ``σ = mean|x − μ|`` (both rounded to
    float16), output ``(x − μ)/σ + β``; keeps packed ``sign(x̂)``, ``mean|x̂|`` and ``σ`` (float16).
    Returns the output and the batch's ``μ`` and ``σ`` (for the running statistics)."""

    @staticmethod
    def forward(ctx, x, beta):
        count = x.numel() // x.shape[1]
        mu = (channel_sum(x) / count).half().float()
        # x̂ overwrites x where nothing else can see x (a layer's fresh output), else one float32 copy
        inplace = x._base is None and not x.is_leaf  # never the caller's own input
        xhat = x.sub_(_per_channel(mu, x)) if inplace else x - _per_channel(mu, x)
        spread = (channel_sum(xhat, absolute=True) / count).float()  # mean|x − μ| before rounding
        sigma = spread.half().float().clamp_min_(torch.finfo(torch.float16).tiny)
        ctx.x_shape, ctx.beta_dtype = x.shape, beta.dtype
        mean_abs = spread.div_(sigma).half()  # mean|x̂| = mean|x − μ|/σ, without another pass over x̂
        ctx.save_for_backward(
            pack_signs(xhat), mean_abs, sigma.half()
        )  # sign(x̂) = sign(x − μ): σ > 0
        ctx.mark_non_differentiable(mu, sigma)
        ctx.set_materialize_grads(False)  # μ and σ get no gradient: no zero tensors for them
        if inplace:
            ctx.mark_dirty(x)
        return (
            torch.addcdiv(_per_channel(beta.float(), x), xhat, _per_channel(sigma, x), out=xhat),
            mu,
            sigma,
        )

    @staticmethod
    def backward(ctx, dy, _dmu, _dsigma):
        kept_signs, mean_abs, sigma = ctx.saved_tensors
        chunks = batch_chunks(dy.shape)  # the authors keep dX in float16
        if len(chunks) == 1:
            rounded = dy.half().float()
        else:
            rounded = torch.empty_like(dy, dtype=torch.float32)
            for i, j in chunks:
                rounded[i:j] = dy[i:j].half()
        total = channel_sum(rounded)
        if not bool(torch.isfinite(total).all()):
            _refuse_float16_overflow(dy)
        return l1_batch_norm_backward(
            rounded, kept_signs, mean_abs.float(), sigma.float(), inplace=True, total=total
        ), total.to(ctx.beta_dtype)


def _refuse_float16_overflow(dy: torch.Tensor) -> None:
    """Raise where a finite float32 gradient reaching an l1 batch norm overflows float16, the precision the
    low-memory mode keeps it in (a gradient already NaN or infinite in float32 is left to the caller's checks)."""
    if not bool(torch.isfinite(dy).all()):
        return
    per_channel = dy.numel() // dy.shape[1]
    raise OverflowError(
        f"the gradient reaching an l1 batch norm over {dy.shape[1]} channels reaches "
        f"{largest_magnitude(dy):.3g}, beyond float16's {torch.finfo(torch.float16).max:g}: the low-memory "
        f"mode keeps this gradient in float16. With {per_channel} value(s) per channel (batch × positions), "
        "σ = mean|x − μ| can be near 0, and dx = dy/σ grows from batch norm to batch norm. Train with a larger "
        "batch (more values per channel) or in the standard mode"
    )


class HalfInputLayer(Function):
    """A higher-precision layer of the low-memory mode (ResNetE-18's first, last and shortcut layers):
    ``y = op(x, W) + b`` in float32, keeping ``x`` in float16 for backward; ``dW`` and ``db`` come back in
    the parameters' dtype (float16), ``dX`` in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, op):
        ctx.op, ctx.x_shape = op, x.shape
        ctx.save_for_backward(x.half(), weight)
        y = op(x, weight.float())
        return y if bias is None else y.add_(_per_channel(bias.float(), y))

    @staticmethod
    def backward(ctx, dy):
        kept, weight = ctx.saved_tensors
        dx = ctx.op.input_grad(dy, weight.float(), ctx.x_shape) if ctx.needs_input_grad[0] else None
        dw = ctx.op.weight_grad(kept.float(), dy, weight.shape).to(weight.dtype)
        db = dy.sum(channel_dims(dy)).half() if ctx.needs_input_grad[2] else None
        return dx, dw, db, None


class ReLUMask(Function):
    """``max(x, 0)`` keeping only its mask ``1[x > 0]``: float32 (standard) or packed bits (low-memory)."""

    @staticmethod
    def forward(ctx, x, packed):
        _keep_mask(ctx, x > 0, packed)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, dy):
        return _masked(ctx, dy), None


class MaxPool3x3(Function):
    """3×3 max-pooling, stride 2, padding 1 (a ResNet stem) keeping, per output, the position of its
    maximum inside its window (0–8) as one byte: a low-memory stand-in for torch's float32 input and int64
    indices."""

    @staticmethod
    def forward(ctx, x, _packed=True):
        y, index = F.max_pool2d(x, 3, 2, 1, return_indices=True)
        width = x.shape[3]
        rows = torch.arange(y.shape[2], device=y.device).view(-1, 1) * 2 - 1
        cols = torch.arange(y.shape[3], device=y.device) * 2 - 1
        offset = (index // width - rows) * 3 + (index % width - cols)
        ctx.x_shape = x.shape
        ctx.save_for_backward(offset.to(torch.uint8))
        return y

    @staticmethod
    def backward(ctx, dy):
        (offset,) = ctx.saved_tensors
        n, c, height, width = ctx.x_shape
        rows = torch.arange(dy.shape[2], device=dy.device).view(-1, 1) * 2 - 1
        cols = torch.arange(dy.shape[3], device=dy.device) * 2 - 1
        dx = dy.new_zeros((n, c, height * width))
        for i, j in batch_chunks(ctx.x_shape):
            off = offset[i:j].long()
            index = (rows + off // 3) * width + cols + off % 3
            dx[i:j].scatter_add_(2, index.flatten(2), dy[i:j].flatten(2))
        return dx.view(ctx.x_shape), None


class AvgPool2x2(Function):
    """2×2 average pooling, stride 2 (even sides), keeping nothing for backward (torch keeps the input)."""

    @staticmethod
    def forward(ctx, x):
        return F.avg_pool2d(x, 2, 2)

    @staticmethod
    def backward(ctx, dy):
        return F.interpolate(dy, scale_factor=2, mode="nearest").mul_(0.25)
