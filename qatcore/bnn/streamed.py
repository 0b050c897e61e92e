"""The low-memory step of a sequential BNN as one pass over the whole network, a few rows of the batch at a time.

Layer by layer (``qatcore.bnn.functions``), the low-memory mode keeps every 1-bit quantity as packed bits, yet
the tensors that pass between modules are whole-batch float32: a layer's output before its batch norm in the
forward pass, and the gradient flowing back. Those, not what is kept, set the peak. ``StreamedNetwork`` runs the
same algorithm over the network's *stages* (binary layer → [2×2 pool] → l1 batch norm → [sign → [2×2 pool]]) so
that no whole-batch float tensor of a large layer exists:

* **Forward.** A binary layer's output is an integer (a sum of ±1 products). It is kept whole, as int16, while
  the batch norm's statistics are taken (``μ``, then ``σ = mean|y − μ|``: both need the whole batch) where that
  fits in its budget (``OUTPUT_SHARE``); a larger one is counted per channel and value in one pass (the histogram
  gives both statistics), its first rows kept up to the budget and the others recomputed once. The first layer's
  real-valued output is recomputed for each statistic. Then
  each chunk becomes the stage's packed bits: ``sign(x̂)``, the STE mask (with the switches of a pool after the
  sign folded in: backward only needs their product), the next stage's input.
* **Backward.** The batch norm's backward needs two per-channel sums of its incoming gradient ``g`` over the
  batch, and the power-of-two ``dY`` needs ``max|dY|`` before any chunk is quantised. Both come from the pass of
  the stage above that produces ``g``: the sums, and ``g``'s extremes per channel, which bound ``max|dY|`` (the
  batch norm's backward increases with ``g``). ``dY`` is quantised relative to that bound; where the true
  ``max|dY|``, found on the way, would have scaled it otherwise, the stage's pass runs again with it. The
  gradient between two stages is kept in float16 (the batch norm rounds its incoming gradient to float16
  first, so nothing changes): whole, or its first rows and the others recomputed, chunk by chunk, from the
  gradient above it, then kept whole. ``gradient_plan`` chooses which, for all of them together, so that the
  float16 gradients each pass holds stay within its allowance (``GRADIENT_SHARE``, ``_allowances``) and the
  fewest multiply-adds are recomputed. The budgets are shares of the network's largest such tensor: the step's
  transient memory grows with the layers' outputs as the standard step's does, a fixed fraction of it.
  ``budgets(...)`` sets the chunk size, both shares and the weight block (``CONV_BLOCK``) for the steps taken
  inside it: smaller ones lower the peak and cost time.

Every chunk's arithmetic is the layer-by-layer mode's, element for element, and every per-channel sum is taken
in float64 in both (``functions.channel_sum``), where it is exact for the values training meets, so the order
in which chunks are added does not matter: the step's results are the layer-by-layer step's, bit for bit. The three small models
(``BNNMLP``, ``CNV``, ``BinaryNet``) take this path in the low-memory mode with 1-bit weight gradients, where
some stage's batch spans more than one chunk (``streamed_forward``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.autograd import Function

from qatcore.bnn import functions as fn
from qatcore.bnn.gradient_plan import gradient_rows
from qatcore.bnn.layers import (
    BinaryConv2d,
    BinaryLayer,
    BinaryLinear,
    L1BatchNorm,
    MaxPool2d,
    SignActivation,
)
from qatcore.bnn.packing import pack_bits, pack_signs, pack_within_one, packed_size
from qatcore.checks import int_at_least

#: values of a stage's largest per-example tensor in one chunk of rows: the bound on every float32 working copy
ROW_VALUES = 1 << 18
#: share of the network's largest binary-layer output (int16) that a layer's output may keep while its batch
#: norm's statistics are taken: the whole of it where it fits, else its first rows (it is then counted in a
#: histogram and the other rows recomputed)
OUTPUT_SHARE = 0.6
#: values of a convolution's weight made at a time: a larger layer's weight gradient is computed a block of output
#: channels at a time, and its input gradient a block of input channels at a time (its float32 ``sign(W)`` and
#: ``dW`` pieces would otherwise be the step's largest temporaries)
CONV_BLOCK = 1 << 18
#: share of the network's largest gradient between two stages (float16) that the kept ones held by a pass of the
#: backward may take together; a pass whose chunks' float32 working copies are smaller than the largest pass's may
#: hold that much more (``_allowances``; ``gradient_plan``: where no plan fits, the least raise that one fits). The
#: kept gradients set CNV's peak at batch 100: 0.3 holds it 1.5 MiB lower than 0.45 for about 4% more time
GRADIENT_SHARE = 0.3
_TINY = torch.finfo(torch.float16).tiny


@contextmanager
def budgets(
    row_values: int | None = None,
    output_share: float | None = None,
    gradient_share: float | None = None,
    conv_block: int | None = None,
) -> Iterator[None]:
    """Stream the steps taken inside it with other chunks and budgets (``ROW_VALUES``, ``OUTPUT_SHARE``,
    ``GRADIENT_SHARE``, ``CONV_BLOCK``; None keeps one as it is), the values from before back on leaving. Smaller ones
    lower the step's peak and cost time: more chunks and weight blocks, each a few more kernel calls, and more rows
    recomputed rather than kept. The results do not change, bit for bit."""
    given = {
        "ROW_VALUES": None if row_values is None else int_at_least("row_values", row_values, 1),
        "OUTPUT_SHARE": _share("output_share", output_share),
        "GRADIENT_SHARE": _share("gradient_share", gradient_share),
        "CONV_BLOCK": None if conv_block is None else int_at_least("conv_block", conv_block, 1),
    }
    module = globals()
    before = {name: module[name] for name in given}
    module.update({name: value for name, value in given.items() if value is not None})
    try:
        yield
    finally:
        module.update(before)


def _share(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


@dataclass
class Stage:
    """One binary layer and what follows it up to the next: ``layer → [pool] → bn → [sign → [pool]]``."""

    layer: BinaryLayer
    flatten: bool = False  # its input is flattened first
    pool_before: bool = False  # a 2×2 max-pool between the layer and its batch norm (BinaryNet)
    bn: L1BatchNorm | None = None
    sign: bool = False  # a sign activation follows the batch norm (every stage but the last)
    pool_after: bool = False  # a 2×2 max-pool after the sign (CNV)
    # set by ``plan``: shapes (with the batch), chunks, the budget of its kept output (bytes) and the rows of its
    # output gradient kept in float16 (the others recomputed from the stage above's)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    chunks: list[tuple[int, int]] = field(default_factory=list)
    output_bytes: int = 0
    gradient_rows: int = 0

    def op(self) -> fn.DenseOp | fn.ConvOp:
        if isinstance(self.layer, BinaryConv2d):
            return fn.ConvOp(self.layer.stride, self.layer.padding)
        return fn.DenseOp()


def stages_of(model: nn.Module) -> list[Stage] | None:
    """``model``'s stages, or None when it is not a ``Sequential`` of them (a first ``Flatten`` allowed)."""
    if not isinstance(model, nn.Sequential):
        return None
    stages: list[Stage] = []
    flatten = False
    for m in model:
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            flatten = True
        elif isinstance(m, BinaryLinear | BinaryConv2d):
            stages.append(Stage(layer=m, flatten=flatten))
            flatten = False
        elif not stages or flatten or not _attach(stages[-1], m):
            return None
    if not stages or flatten or any(s.bn is None for s in stages):
        return None
    if any(not s.sign for s in stages[:-1]) or stages[-1].sign:
        return None
    return stages


def _attach(stage: Stage, m: nn.Module) -> bool:
    """Add ``m`` to the end of ``stage``, where a stage can have it there."""
    if isinstance(m, MaxPool2d) and stage.bn is None and not stage.pool_before:
        stage.pool_before = True
    elif isinstance(m, MaxPool2d) and stage.sign and not stage.pool_after:
        stage.pool_after = True
    elif isinstance(m, L1BatchNorm) and stage.bn is None:
        stage.bn = m
    elif isinstance(m, SignActivation) and stage.bn is not None and not stage.sign:
        stage.sign = True
    else:
        return False
    return True


def can_stream(model: nn.Module, x: torch.Tensor) -> list[Stage] | None:
    """``model``'s stages when its training step can be streamed: training with gradients, every layer in the
    low-memory mode with 1-bit weight gradients, the input needing no gradient. Else None."""
    if not (model.training and torch.is_grad_enabled() and getattr(model, "streamed", False)):
        return None
    if x.requires_grad:
        return None
    stages = stages_of(model)
    if stages is None:
        return None
    for s in stages:
        layer = s.layer
        if not (layer.low_memory and layer.bit_gradients) or layer.weight.dtype != torch.float16:
            return None
        if isinstance(layer, BinaryConv2d) and (layer.groups != 1 or layer.dilation != (1, 1)):
            return None
    return stages


def plan(stages: list[Stage], x_shape) -> bool:
    """Set each stage's shapes (with the batch: its input, the layer's output ``y``, the batch norm's input ``z``,
    its output) and its chunks of rows; True when some stage spans more than one chunk (else streaming saves
    nothing: every tensor of the step is already no larger than a chunk)."""
    n = x_shape[0]
    previous: tuple[int, ...] = tuple(x_shape)
    below_z: tuple[int, ...] = (n, 1)
    for s, st in enumerate(stages):
        op, weight = st.op(), st.layer.weight
        in_shape = (n, _per_example(previous)) if st.flatten else previous
        y_shape = op.output_shape(in_shape, weight.shape)
        z_shape = _pooled(y_shape) if st.pool_before else y_shape
        out_shape = _pooled(z_shape) if st.pool_after else z_shape
        st.shapes = {"in": in_shape, "y": y_shape, "z": z_shape, "out": out_shape}
        packed = [_per_example(z_shape), _per_example(out_shape)]
        packed += [_per_example(in_shape)] if s else []
        packed += [_per_example(y_shape)] if st.pool_before else []
        # its backward also makes the stage below's batch-norm gradient, of that stage's "z" shape
        largest = max(_per_example(t) for t in [*st.shapes.values(), below_z])
        st.chunks = _row_chunks(n, largest, packed)
        previous, below_z = out_shape, z_shape
    outputs = [
        2 * math.prod(st.shapes["z"]) for s, st in enumerate(stages) if s or st.layer.binary_input
    ]
    for st in stages:
        st.output_bytes = int(OUTPUT_SHARE * max(outputs, default=0))
    if all(len(st.chunks) <= 1 for st in stages):
        return False
    gradients = [2 * _per_example(st.shapes["out"]) for st in stages[:-1]]
    # recomputing a row of a stage's output gradient: the input gradient of the stage above, for one example
    costs = [_per_example(st.shapes["y"]) * st.layer.weight[0].numel() for st in stages[1:]]
    for st, rows in zip(
        stages, gradient_rows(gradients, costs, n, _allowances(stages)), strict=False
    ):
        st.gradient_rows = rows
    return True


def _allowances(stages: list[Stage]) -> list[int]:
    """Bytes of kept gradients each stage's backward pass may hold: ``GRADIENT_SHARE`` of the largest, and as much
    more as its chunks' float32 working copies (its input, ``dY`` and the batch-norm gradient below) are smaller
    than those of the pass with the largest."""
    largest = max((2 * math.prod(st.shapes["out"]) for st in stages[:-1]), default=0)
    work = []
    for s, st in enumerate(stages):
        below = _per_example(stages[s - 1].shapes["z"]) if s else 0
        i, j = st.chunks[0]
        work.append(
            4 * (j - i) * (_per_example(st.shapes["in"]) + _per_example(st.shapes["y"]) + below)
        )
    return [int(GRADIENT_SHARE * largest) + max(work) - w for w in work]


def streamed_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The logits of a streamed low-memory training step of ``model`` on ``x``, or None when it is not streamed
    (``can_stream``, ``plan``; the caller then runs its modules one by one)."""
    stages = can_stream(model, x)
    if stages is None or not plan(stages, tuple(x.shape)):
        return None
    betas = [s.bn.bias for s in stages if s.bn is not None]
    return StreamedNetwork.apply(x, stages, *betas)


def _per_channel(values: torch.Tensor, like_shape) -> torch.Tensor:
    return values.view((1, -1) + (1,) * (len(like_shape) - 2))


def _dims(shape) -> tuple[int, ...]:
    return (0,) + tuple(range(2, len(shape)))


def _pooled(shape) -> tuple[int, ...]:
    return (*shape[:2], shape[2] // 2, shape[3] // 2)


def _per_example(shape) -> int:
    return math.prod(shape[1:])


def _row_chunks(n: int, largest: int, packed: list[int]) -> list[tuple[int, int]]:
    """Row ranges of about ``ROW_VALUES`` values of the largest per-example tensor; each range starts on a whole
    byte of every packed tensor (``packed``: their values per example)."""
    align = 1
    for per_example in packed:
        align = math.lcm(align, 8 // math.gcd(8, per_example))
    rows = max(align, ROW_VALUES // max(largest, 1) // align * align)
    return [(i, min(i + rows, n)) for i in range(0, n, rows)]


def _put(buffer: torch.Tensor, per_example: int, start: int, bits: torch.Tensor) -> None:
    """Write the packed bits of rows from ``start`` into ``buffer``, the packed tensor of all rows."""
    offset = start * per_example // 8
    buffer[offset : offset + bits.numel()] = bits


def _mask_rows(packed: torch.Tensor, shape, i: int, j: int) -> torch.Tensor:
    """Rows ``i:j`` of the uint8 0/1 mask of ``shape`` packed by ``pack_bits``."""
    return fn.unpack_rows(packed, shape, i, j, torch.uint8)


def _bits(n: int, shape) -> torch.Tensor:
    return torch.empty(packed_size(n * _per_example(shape)), dtype=torch.uint8)


class _Reductions:
    """What a batch norm's backward needs of its incoming gradient ``g`` before it can start: per-channel sums over
    the batch (``Σg``, ``Σ sign(x̂)·g``, in float64 as ``functions.channel_sum``) and ``g``'s largest and smallest value per channel."""

    def __init__(self, channels: int) -> None:
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.correlation = torch.zeros(channels, dtype=torch.float64)
        self.high = torch.full((channels,), -math.inf)
        self.low = torch.full((channels,), math.inf)

    def add(self, g: torch.Tensor, positive: torch.Tensor) -> None:
        """Add rows of ``g`` (overwritten) given where ``sign(x̂)`` is +1 (``positive``, a uint8 mask):
        ``Σ sign(x̂)·g = 2·Σ_{x̂≥0} g − Σg``, exact in float64 as each sum is."""
        dims = _dims(g.shape)
        total = g.sum(dims, dtype=torch.float64)
        torch.maximum(self.high, g.amax(dims), out=self.high)
        torch.minimum(self.low, g.amin(dims), out=self.low)
        self.total += total
        self.correlation += g.mul_(positive).sum(dims, dtype=torch.float64).mul_(2).sub_(total)


def _statistics(first_rows, z_rows, z_shape, chunks, largest: int | None, budget: int):
    """The batch's per-channel ``μ`` (rounded to float16) and ``mean|z − μ|`` (float32) of the batch norm's input
    ``z``, whose rows ``z_rows(i, j)`` computes (``first_rows`` on the first pass), and the rows of ``z`` kept as
    int16 for the next pass (the first ones, whole chunks; None when none are). An integer ``z``
    (``|z| ≤ largest``) is kept whole if it fits in ``budget`` bytes; else it is counted per channel and value in
    one pass (a histogram gives both statistics) when the counts fit, its first rows kept up to ``budget``
    and the rest recomputed once. Otherwise, and for a real ``z``, it is recomputed for each statistic."""
    n, channels = z_shape[0], z_shape[1]
    integer = largest is not None and largest < 2**15
    rows = max((j for _, j in chunks if 2 * j * _per_example(z_shape) <= budget), default=0)
    counted = (
        largest is not None and integer and rows < n and 4 * channels * (2 * largest + 1) <= budget
    )
    store = (
        torch.empty((rows, *z_shape[1:]), dtype=torch.int16)
        if integer and rows and (rows == n or counted)
        else None
    )
    if counted:
        assert largest is not None  # (for mypy)
        return (*_counted_statistics(first_rows, z_shape, chunks, largest, store), store)
    dims, count = _dims(z_shape), n * math.prod(z_shape[2:])
    total = torch.zeros(channels, dtype=torch.float64)
    for i, j in chunks:
        z = first_rows(i, j)
        if store is not None:
            store[i:j] = z
        total += z.sum(dims, dtype=torch.float64)
        del z  # (before the next chunk's is made)
    mu = (total / count).half().float()
    mu_c = _per_channel(mu, z_shape)
    spread = torch.zeros_like(total)
    for i, j in chunks:
        z = store[i:j].float() if store is not None else z_rows(i, j)
        spread += z.sub_(mu_c).abs_().sum(dims, dtype=torch.float64)
        del z
    return mu, (spread / count).float(), store


def _counted_statistics(first_rows, z_shape, chunks, largest: int, store: torch.Tensor | None):
    """``_statistics`` of an integer ``z`` (``|z| ≤ largest``) from its per-channel histogram, made in one pass
    (each chunk counted over its own range of values, the counts kept over the range met so far), its first rows
    kept in ``store``."""
    channels, count = z_shape[1], z_shape[0] * math.prod(z_shape[2:])
    counts = torch.zeros((channels, 0), dtype=torch.int32)  # at most n·H·W per value
    lowest, highest = largest + 1, -largest - 1  # the range of values met: none yet
    for i, j in chunks:
        z = first_rows(i, j)
        if store is not None and j <= store.shape[0]:
            store[i:j] = z
        low, high = (int(v) for v in torch.aminmax(z))
        if low < lowest or high > highest:  # a wider range: the counts so far moved into it
            wider = torch.zeros(
                (channels, max(high, highest) - min(low, lowest) + 1), dtype=torch.int32
            )
            start = max(lowest - low, 0)
            wider[:, start : start + counts.shape[1]] = counts
            counts, lowest, highest = wider, min(low, lowest), max(high, highest)
        width = high - low + 1
        offsets = _per_channel(torch.arange(channels, dtype=torch.int32) * width - low, z_shape)
        codes = z.to(torch.int32).add_(offsets).view(-1)  # below channels·(2·largest + 1) < 2³¹
        del z
        part = torch.bincount(codes, minlength=channels * width)
        del codes
        counts[:, low - lowest : high - lowest + 1] += part.view(channels, width)
    per_value = counts.double()
    values = torch.arange(lowest, highest + 1, dtype=torch.float32)
    mu = ((per_value @ values.double()) / count).half().float()
    deviation = (values - mu.view(-1, 1)).abs_()  # |z − μ| in float32, as a pass over z computes it
    return mu, (per_value * deviation).sum(1).div_(count).float()


class _LayerRows:
    """Rows of a stage's batch-norm input ``z``: the binary layer on those rows of its input (the first layer's
    real-valued input, or the previous stage's packed signs), then the pool before the batch norm, if any."""

    def __init__(self, st: Stage, first_input: torch.Tensor | None, bits: torch.Tensor | None):
        self.st, self.first_input, self.bits = st, first_input, bits
        self.op = st.op()
        # a large layer's float32 sign(W) is made a block at a time (over a binary input, where the integer
        # sums are exact in any order)
        binary = bits is not None or st.layer.binary_input
        self.blocked = _blocked(self.op, st.layer.weight) or (
            binary and st.layer.weight.numel() > CONV_BLOCK
        )
        self.w = None if self.blocked else fn.sign(st.layer.weight)

    def __call__(self, i: int, j: int, switches: torch.Tensor | None = None) -> torch.Tensor:
        st = self.st
        if self.bits is not None:
            inputs = fn.unpack_rows(self.bits, st.shapes["in"], i, j)
        else:
            assert self.first_input is not None
            inputs = self.first_input[i:j]
            inputs = fn.sign(inputs) if st.layer.binary_input else inputs
        if self.w is not None:
            y = self.op(inputs, self.w)
        elif isinstance(self.op, fn.DenseOp):
            y = _dense_blocks(inputs, st.layer.weight)
        else:
            y = _conv_blocks(self.op, inputs, st.layer.weight)
        if not st.pool_before:
            return y
        z, mask = fn.max_pool_switches(y)
        if switches is not None:  # the first pass over the rows keeps the switches
            _put(switches, _per_example(st.shapes["y"]), i, pack_bits(mask))
        return z


def _stage_forward(st: Stage, rows: _LayerRows, keep) -> torch.Tensor:
    """One stage's forward pass: its batch norm's statistics, then, chunk by chunk, the packed bits its backward
    needs (``keep(name, tensor)``); returns the next stage's input as packed signs, or the logits."""
    n, (y_shape, z_shape, out_shape) = st.shapes["z"][0], (st.shapes[k] for k in ("y", "z", "out"))
    switches = _bits(n, y_shape) if st.pool_before else None
    binary = rows.bits is not None or st.layer.binary_input
    # the largest |output| of a binary layer: its fan-in (a sum of that many ±1 products)
    mu, mean_spread, store = _statistics(
        lambda i, j: rows(i, j, switches),
        rows,
        z_shape,
        st.chunks,
        st.layer.weight[0].numel() if binary else None,
        st.output_bytes,
    )
    sigma = mean_spread.half().float().clamp_min_(_TINY)
    assert st.bn is not None
    st.bn.update_running(mu, sigma)
    mu_c, sigma_c = _per_channel(mu, z_shape), _per_channel(sigma, z_shape)
    beta_c = _per_channel(st.bn.bias.float(), z_shape)
    per_z, per_out = _per_example(z_shape), _per_example(out_shape)
    xhat_bits, mask_bits, out_bits = _bits(n, z_shape), _bits(n, z_shape), _bits(n, out_shape)
    logits = None if st.sign else torch.empty(z_shape)
    for i, j in st.chunks:
        kept = store is not None and j <= store.shape[0]
        xhat = (store[i:j].float() if kept else rows(i, j)).sub_(mu_c)
        _put(xhat_bits, per_z, i, pack_signs(xhat))
        out = torch.addcdiv(beta_c, xhat, sigma_c, out=xhat)
        if logits is not None:
            logits[i:j] = out
            continue
        a = fn.sign(out)
        if st.pool_after:  # the STE's mask and the pool's switches after the sign
            a, switches_after = fn.max_pool_switches(a)
            mask = pack_bits(switches_after.logical_and_(out.abs() <= 1))
        else:
            mask = pack_within_one(out)  # the STE's mask
        _put(mask_bits, per_z, i, mask)
        _put(out_bits, per_out, i, pack_signs(a))
        del xhat, out, a  # (before the next chunk's are made)
    if switches is not None:
        keep("switches_before", switches)
    keep("xhat", xhat_bits)
    keep("mean_abs", mean_spread.div(sigma).half())
    keep("sigma", sigma.half())
    if logits is not None:
        return logits
    keep("mask", mask_bits)
    return out_bits


class StreamedNetwork(Function):
    """The low-memory training step of a network of ``Stage``'s (``plan`` has set their shapes and chunks):
    forward returns the logits; backward leaves each binary weight's 1-bit gradient on ``weight.grad_bits`` and
    returns the batch norms' ``dβ``."""

    @staticmethod
    def forward(ctx, x, stages, *betas):
        with fn.allocating_on(x.device):
            return StreamedNetwork._forward(ctx, x, stages)

    @staticmethod
    def _forward(ctx, x, stages):
        kept: list[torch.Tensor] = []  # saved for backward, named by ``names``
        names: list[tuple[int, str]] = []

        def keeper(s: int):
            def keep(name: str, t: torch.Tensor) -> None:
                names.append((s, name))
                kept.append(t)

            return keep

        first = stages[0]
        keeper(0)("in", pack_signs(x) if first.layer.binary_input else x)
        out = _stage_forward(
            first, _LayerRows(first, x.reshape(first.shapes["in"]), None), keeper(0)
        )
        for s, st in enumerate(stages[1:], start=1):
            keeper(s)("in", out)
            out = _stage_forward(st, _LayerRows(st, None, out), keeper(s))
        ctx.stages, ctx.names = stages, names
        ctx.save_for_backward(*kept)
        return out

    @staticmethod
    def backward(ctx, grad):
        with fn.allocating_on(grad.device):
            return StreamedNetwork._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        stages: list[Stage] = ctx.stages
        saved = dict(zip(ctx.names, ctx.saved_tensors, strict=True))
        last = len(stages) - 1
        logits_grad = grad.half().float().reshape(stages[last].shapes["out"])

        def source(i: int, j: int) -> torch.Tensor:
            return logits_grad[i:j].clone()

        step = _StageBackward(stages, saved, last, None, source)
        reductions = _Reductions(stages[last].shapes["z"][1])
        for i, j in stages[last].chunks:
            reductions.add(step.bn_grad(last, source(i, j), i, j), step.positive(last, i, j))
        dbetas = [None] * len(stages)
        for s in range(last, -1, -1):
            bn = stages[s].bn
            assert bn is not None
            dbetas[s] = reductions.total.to(bn.bias.dtype)
            step = _StageBackward(stages, saved, s, reductions, source)
            # the stage below's output gradient: its first rows kept in float16 as planned (all of them, or the
            # rest recomputed from this stage's source, chunk by chunk)
            kept, reductions = step.run(stages[s - 1].gradient_rows if s else 0)
            whole = s > 0 and kept.shape[0] == stages[s - 1].shapes["out"][0]
            # (a whole one does not hold on to this stage's source, nor that to the one above)
            source = _Kept(kept, None if whole else step.recomputed)
        return (None, None, *dbetas)


class _Kept:
    """Rows of a gradient as float32: its first rows kept in float16, the rest recomputed (``recompute(i, j)``)."""

    def __init__(self, values: torch.Tensor, recompute: Callable | None) -> None:
        self.values, self.recompute = values, recompute

    def __call__(self, i: int, j: int) -> torch.Tensor:
        k = self.values.shape[0]
        if j <= k:
            return self.values[i:j].float()
        assert self.recompute is not None
        if i >= k:
            return self.recompute(i, j)
        return torch.cat([self.values[i:k].float(), self.recompute(k, j)])


class _StageBackward:
    """Stage ``s``'s backward once its batch norm's reductions are known: ``dY`` rows from the rows of its output
    gradient (``source(i, j)``), the binary weight's 1-bit gradient, and the stage below's output gradient."""

    def __init__(self, stages, saved, s: int, reductions: _Reductions | None, source) -> None:
        self.stages, self.saved, self.s, self.source = stages, saved, s, source
        st = self.st = stages[s]
        self.op = st.op()
        if reductions is None:  # used for its helpers only
            return
        z_shape = st.shapes["z"]
        count = z_shape[0] * math.prod(z_shape[2:])
        self.inverse = _per_channel(saved[s, "sigma"].float(), z_shape).reciprocal()
        mean = _per_channel((reductions.total / count).float(), z_shape)
        self.shift = mean.mul(self.inverse).neg_()  # −mean(g/σ)
        self.slope = (  # −mean(sign(x̂)·g/σ)·mean|x̂|
            _per_channel(reductions.correlation.float(), z_shape)
            .mul_(self.inverse)
            .mul_(_per_channel(saved[s, "mean_abs"].float(), z_shape) / -count)
        )
        self.top = _largest_dy_bound(reductions, self.inverse, self.shift, self.slope)

    def signs(self, s: int, i: int, j: int) -> torch.Tensor:
        return fn.unpack_rows(self.saved[s, "xhat"], self.stages[s].shapes["z"], i, j)

    def positive(self, s: int, i: int, j: int) -> torch.Tensor:
        return fn.unpack_rows(self.saved[s, "xhat"], self.stages[s].shapes["z"], i, j, torch.uint8)

    def bn_grad(self, s: int, big_g: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Rows ``i:j`` of stage ``s``'s batch-norm gradient ``g`` from those of its output gradient."""
        st = self.stages[s]
        if st.pool_after:
            big_g = fn.spread_over_windows(big_g, st.shapes["z"])
        if st.sign:
            return big_g.mul_(_mask_rows(self.saved[s, "mask"], st.shapes["z"], i, j))
        return big_g

    def dy(self, i: int, j: int) -> tuple[torch.Tensor, float]:
        """Rows ``i:j`` of the quantised ``dY``, and their ``max|dY|`` before quantising."""
        s, st = self.s, self.st
        g = self.bn_grad(s, self.source(i, j), i, j)
        dz = torch.addcmul(self.shift, g, self.inverse, out=g).addcmul_(
            self.signs(s, i, j), self.slope
        )
        largest = fn.largest_magnitude(dz)
        if st.pool_before:
            dz = fn.spread_over_windows(dz, st.shapes["y"]).mul_(
                _mask_rows(self.saved[s, "switches_before"], st.shapes["y"], i, j)
            )
        finite = math.isfinite(largest)
        return fn.quantize_gradient(
            dz, st.layer.gradient, self.top, finite, overwrite=True
        ), largest

    def below(self, dyq: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Rows ``i:j`` of the stage below's output gradient (float32, rounded to float16)."""
        # sign(W) is made anew for each chunk, a large layer's a block at a time: its float32 copy would
        # otherwise sit beside the float32 sum of its weight gradient for the whole pass
        dx = _input_grad(self.op, dyq, self.st.layer.weight, self.st.shapes["in"], j - i)
        rounded = dx.copy_(dx.half())  # as the batch norm below rounds it
        return rounded.reshape((j - i, *self.stages[self.s - 1].shapes["out"][1:]))

    def recomputed(self, i: int, j: int) -> torch.Tensor:
        return self.below(self.dy(i, j)[0], i, j)

    def run(self, rows: int) -> tuple[torch.Tensor, _Reductions]:
        """The pass over the stage's chunks: sets the weight's 1-bit gradient; returns the first ``rows`` rows of
        the stage below's output gradient (float16; the others are to be recomputed) and its batch norm's
        reductions. ``dY`` is quantised relative to the bound of ``max|dY|``; where the true one would scale it
        otherwise, the pass is run again with that."""
        for attempt in range(2):
            kept, reductions, largest = self._pass(rows)
            po2 = self.st.layer.gradient == "po2"
            if attempt or not po2 or _same_scale(largest, self.top):
                return kept, reductions
            self.top = largest
        raise AssertionError("unreachable")

    def _pass(self, rows: int) -> tuple[torch.Tensor, _Reductions, float]:
        s, st = self.s, self.st
        weight_grad = _WeightGradient(
            self.op,
            st.layer.weight.shape,
            lambda i, j: _inputs(self.saved[s, "in"], st.shapes["in"], i, j),
            math.prod(st.shapes["y"]),
            coded=st.layer.gradient == "po2",
        )
        below = self.stages[s - 1] if s else None
        reductions = _Reductions(below.shapes["z"][1] if below is not None else 1)
        kept = torch.empty((rows, *below.shapes["out"][1:]) if below else (0,), dtype=torch.float16)
        largest = 0.0
        for i, j in st.chunks:
            dyq, chunk_largest = self.dy(i, j)
            largest = max(largest, chunk_largest)
            weight_grad.add(i, j, dyq)
            if below is None:
                continue
            big_g = self.below(dyq, i, j)
            del dyq
            if i < rows:
                kept[i : min(j, rows)] = big_g[: rows - i]
            reductions.add(self.bn_grad(s - 1, big_g, i, j), self.positive(s - 1, i, j))
            del big_g  # (before the next chunk's is made)
        st.layer.weight.grad_bits, st.layer.weight.grad_clip = weight_grad.bits(), st.layer.clip
        return kept, reductions, largest


def _blocked(op, weight: torch.Tensor) -> bool:
    """Whether a dense layer's ``sign(W)`` is made a block of rows or columns at a time (a large one: its float32
    copy would be the largest tensor of the step)."""
    return isinstance(op, fn.DenseOp) and weight.numel() > fn.WEIGHT_BLOCK


def _dense_blocks(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x·sign(W)ᵀ``, ``WEIGHT_BLOCK`` values of ``W``'s rows at a time (each output is the same dot product)."""
    rows = max(1, fn.WEIGHT_BLOCK // weight.shape[1])
    y = x.new_empty((x.shape[0], weight.shape[0]))
    for r in range(0, weight.shape[0], rows):
        torch.matmul(x, fn.sign(weight[r : r + rows]).t(), out=y[:, r : r + rows])
    return y


def _conv_blocks(op: fn.ConvOp, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A convolution's output, ``CONV_BLOCK`` values of its weight (whole output channels) at a time."""
    y = x.new_empty(op.output_shape(x.shape, weight.shape))
    step = max(1, CONV_BLOCK // weight[0].numel())
    for o in range(0, weight.shape[0], step):
        y[:, o : o + step] = op(x, fn.sign(weight[o : o + step]))
    return y


def _input_grad(op, dyq: torch.Tensor, weight: torch.Tensor, in_shape, rows: int) -> torch.Tensor:
    """A binary layer's input gradient of ``rows`` examples; a large layer's ``sign(W)`` is made a block at a
    time: a convolution's a block of input channels (``CONV_BLOCK`` values), a dense layer's a block of columns
    (``functions.WEIGHT_BLOCK`` values)."""
    if isinstance(op, fn.DenseOp) and _blocked(op, weight):
        columns = max(1, fn.WEIGHT_BLOCK // weight.shape[0])
        dx = dyq.new_empty((rows, weight.shape[1]))
        for c in range(0, weight.shape[1], columns):
            torch.matmul(dyq, fn.sign(weight[:, c : c + columns]), out=dx[:, c : c + columns])
        return dx
    if weight.numel() <= CONV_BLOCK:
        return op.input_grad(dyq, fn.sign(weight), (rows, *in_shape[1:]))
    dx = dyq.new_empty((rows, *in_shape[1:]))
    step = max(1, CONV_BLOCK // weight[:, 0].numel())
    for c in range(0, weight.shape[1], step):
        block = fn.sign(weight[:, c : c + step])
        dx[:, c : c + step] = op.input_grad(dyq, block, (rows, block.shape[1], *in_shape[2:]))
    return dx


def _inputs(kept: torch.Tensor, shape, i: int, j: int) -> torch.Tensor:
    """Rows ``i:j`` of a binary layer's input as the layer saw it: unpacked signs, or the first layer's input."""
    if kept.dtype == torch.uint8:
        return fn.unpack_rows(kept, shape, i, j)
    return kept.reshape(shape)[i:j].float()


class _WeightGradient:
    """The packed ``sign(dW)`` of a binary layer, summed over chunks of rows (``inputs(i, j)``: rows of the layer's
    input). A large convolution's sum is made a block of output channels (``CONV_BLOCK`` values) at a time. Where
    the whole batch's ``dY`` takes less memory than the whole float32 sum, as a dense layer's and a late
    convolution's do, the chunks' ``dY`` are gathered and each block summed over all of them and packed in turn;
    else a whole sum is added to, block by block, chunk by chunk. Each element's sum is the same either way: zero,
    then each chunk's part in turn. A dense layer's chunks fill one whole-batch ``dY``, summed with the layer's
    whole input (the first layer's: the batch itself) by ``functions.dense_sign_bits``."""

    def __init__(self, op, w_shape, inputs: Callable, dy_values: int, coded: bool = False) -> None:
        self.op, self.w_shape, self.inputs = op, w_shape, inputs
        self.dense = isinstance(op, fn.DenseOp)
        per_output = math.prod(w_shape[1:])
        self.step = max(1, CONV_BLOCK // per_output)
        if math.prod(w_shape) > CONV_BLOCK:  # each block starts on a whole byte of the packed bits
            align = 8 // math.gcd(8, per_output)
            self.step = max(align, self.step // align * align)
        # a large convolution's dY is gathered where the whole batch's (one byte a value where it is a power-of-two
        # gradient, ``coded``: ``_Codes``) and one block's sum take less memory than the whole sum
        dy_bytes = dy_values if coded else 4 * dy_values
        smaller = dy_bytes + 4 * self.step * per_output < 4 * math.prod(w_shape)
        self.gathered = self.dense or (math.prod(w_shape) > CONV_BLOCK and smaller)
        self.total: torch.Tensor | None = None
        self.rows: list[tuple[int, int, torch.Tensor | _Codes]] = []
        #: a dense layer's whole-batch ``dY``, filled chunk by chunk (the chunks cover the batch)
        self.dy: torch.Tensor | None = None
        self.batch = dy_values // w_shape[0]

    def add(self, i: int, j: int, dyq: torch.Tensor) -> None:
        if self.dense:
            if self.dy is None:
                self.dy = dyq.new_empty((self.batch, *dyq.shape[1:]))
            self.dy[i:j] = dyq
            return
        if self.gathered:
            self.rows.append((i, j, _Codes.of(dyq)))
            return
        x = self.inputs(i, j)
        if math.prod(self.w_shape) <= CONV_BLOCK:
            part = self.op.weight_grad(x, dyq, self.w_shape)
            self.total = part if self.total is None else self.total.add_(part)
            return
        if self.total is None:
            self.total = torch.zeros(self.w_shape)
        for o in range(0, self.w_shape[0], self.step):
            self.total[o : o + self.step] += self._part(x, dyq, o)

    def _part(self, x: torch.Tensor, dyq: torch.Tensor | _Codes, o: int) -> torch.Tensor:
        block = dyq.columns(o, self.step) if isinstance(dyq, _Codes) else dyq[:, o : o + self.step]
        return self.op.weight_grad(x, block, (block.shape[1], *self.w_shape[1:]))

    def bits(self) -> torch.Tensor:
        if self.dense:
            assert self.dy is not None  # every chunk was added
            # the whole input at once: the first layer's is the batch itself, not a copy
            x, dyq = self.inputs(0, self.batch), self.dy
            if math.prod(self.w_shape) > fn.WEIGHT_BLOCK:
                return fn.dense_sign_bits(x, dyq, self.w_shape)
            self.total = self.op.weight_grad(x, dyq, self.w_shape)
        if self.gathered and not self.dense:
            return self._gathered_bits()
        assert self.total is not None
        return pack_signs(self.total)  # sign(0) = +1

    def _gathered_bits(self) -> torch.Tensor:
        per_output = math.prod(self.w_shape[1:])
        bits = torch.empty(packed_size(math.prod(self.w_shape)), dtype=torch.uint8)
        for o in range(0, self.w_shape[0], self.step):
            total = None  # the first chunk's part, the others added to it (as to zeros)
            for i, j, dyq in self.rows:
                part = self._part(self.inputs(i, j), dyq, o)
                total = part if total is None else total.add_(part)
                del part
            assert total is not None  # (the batch has a chunk)
            _put(bits, per_output, o, pack_signs(total))
            del total
        return bits


class _Codes:
    """Rows of a power-of-two ``dY`` kept one byte a value: 0 for 0, ``±(k + 1)`` for ``±2^(lowest + k)``. Exact: the
    rows are coded only where decoding gives them back bit for bit (every non-zero value a normal power of two, their
    exponents fewer than 128 apart, zeros +0); ``of`` keeps any others as they are."""

    def __init__(self, codes: torch.Tensor, lowest: int) -> None:
        self.codes, self.lowest = codes, lowest

    @staticmethod
    def of(dyq: torch.Tensor) -> torch.Tensor | _Codes:
        """``dyq``'s rows coded, or ``dyq`` itself where they cannot be."""
        if not dyq.numel():
            return dyq
        exponent = dyq.view(torch.int32).bitwise_right_shift(23).bitwise_and_(0xFF)
        lowest = int(torch.where(dyq != 0, exponent, 255).min())
        if int(exponent.max()) - lowest > 126:
            return dyq
        coded = _Codes(
            exponent.sub_(lowest - 1).mul_(torch.sign(dyq).to(torch.int32)).to(torch.int8), lowest
        )
        del exponent
        exact = torch.equal(coded.columns(0, dyq.shape[1]).view(torch.int32), dyq.view(torch.int32))
        return coded if exact else dyq

    def columns(self, start: int, count: int) -> torch.Tensor:
        """The float32 values of the columns (output channels) ``start`` to ``start + count``."""
        code = self.codes[:, start : start + count]
        zero, sign_bit = code == 0, code.lt(0).to(torch.int32).mul_(-(2**31))
        bits = code.to(torch.int32).abs_().add_(self.lowest - 1).bitwise_left_shift_(23)
        return bits.masked_fill_(zero, 0).bitwise_or_(sign_bit).view(torch.float32)


def _largest_dy_bound(
    reductions: _Reductions, inverse: torch.Tensor, shift: torch.Tensor, slope: torch.Tensor
) -> float:
    """An upper bound of ``max|dY|`` from ``g``'s extremes per channel: ``dY = g/σ + shift ± slope`` increases with
    ``g`` whichever the sign of ``x̂``, so it is at most its value at ``g``'s largest value and at least its value at
    the smallest, with either sign (by the same arithmetic; exact where the extremes fall in the right sign class)."""
    flat = [t.reshape(1, -1) for t in (inverse, shift, slope)]
    candidates = torch.stack([reductions.high, reductions.high, reductions.low, reductions.low])
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(-1, 1)
    dz = torch.addcmul(flat[1], candidates, flat[0]).addcmul_(signs, flat[2])
    return fn.largest_magnitude(dz)


def _same_scale(top: float, other: float) -> bool:
    """Whether ``po2_quantize`` scales a gradient alike with either ``max|dY|``."""
    if not (math.isfinite(top) and math.isfinite(other)) or top <= 0 or other <= 0:
        return top == other or top == 0
    return fn.po2_exponent_range(top) == fn.po2_exponent_range(other)
