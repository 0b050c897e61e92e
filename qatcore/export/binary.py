"""Binary layers (``qatcore.bnn``) for the exporters, and their batch norms folded into thresholds.

A ``BinaryLinear``/``BinaryConv2d`` computes ``op(sign(x), sign(W))`` (``x`` itself for the first
layer), with no scale and no bias. It lowers to an optional ``sign`` op and a layer whose weight
is ``±1``. In the packed form, every binary layer with binary input that is followed by
(max-pooling and) batch norm and sign keeps its output as the integer ``z = x·w``, and
``sign(a·(z − μ) + β)`` becomes one integer comparison per channel: ``z ≥ t`` when ``a > 0``,
``z ≤ t`` when ``a < 0``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from torch import nn

from qatcore.bnn.layers import (
    BinaryConv2d,
    BinaryLinear,
    L1BatchNorm1d,
    L1BatchNorm2d,
    MaxPool2d,
    SignActivation,
)
from qatcore.export.ops import Lowering, Op, UnsupportedLayerError, Weight, conv_op


def binary_weight(layer) -> Weight:
    """``sign(W)`` of a binary layer as ``±1`` int8 values (no scale: the layers have none)."""
    return Weight("binary", layer.binary_weight().cpu().numpy().astype(np.int8), bits=1)


def _binary_layer(name: str, layer) -> list[Op]:
    if layer.bias is not None:
        raise UnsupportedLayerError(
            f"cannot export layer {name!r} ({type(layer).__name__}): binary layers have no bias"
        )
    if isinstance(layer, BinaryLinear):
        op = Op("linear", name, {"binary_input": layer.binary_input}, binary_weight(layer))
    else:
        op = conv_op(name, layer, binary_weight(layer), binary_input=layer.binary_input)
    return [Op("sign", f"{name}.input_sign"), op] if layer.binary_input else [op]


#: binary module type → lowering, which ``graph.LOWERINGS`` tries first
LOWERINGS: list[tuple[type, Lowering]] = [
    (BinaryConv2d, _binary_layer),
    (BinaryLinear, _binary_layer),
    (SignActivation, lambda name, module: Op("sign", name)),
]

#: qatcore.bnn's subclasses of standard layers whose eval-mode forward is the standard one (they
#: differ only in what training keeps for backward), with that standard type
SAME_IN_EVAL = [
    (MaxPool2d, nn.MaxPool2d),
    (L1BatchNorm1d, nn.BatchNorm1d),
    (L1BatchNorm2d, nn.BatchNorm2d),
]

#: ops that keep ±1 values ±1
SIGN_PRESERVING = ("maxpool", "flatten")


def drop_repeated_signs(ops: list[Op]) -> list[Op]:
    """Remove a sign whose input is already ±1 (a sign, then only pooling or flattening)."""
    kept: list[Op] = []
    for op in ops:
        before = next((o for o in reversed(kept) if o.kind not in SIGN_PRESERVING), None)
        if op.kind == "sign" and before is not None and before.kind in ("sign", "threshold"):
            continue
        kept.append(op)
    return kept


def _boundary(positive, crossing: float, direction: int, limit: int) -> int:
    """The integer ``t`` with ``positive(z) ⟺ z ≥ t`` (direction 1) or ``z ≤ t`` (−1), found near
    ``crossing`` and then moved so the rounding of ``crossing`` cannot put it off by one."""
    t = math.ceil(crossing) if direction > 0 else math.floor(crossing)
    while -limit < t < limit and positive(t - direction):
        t -= direction
    while -limit <= t <= limit and not positive(t):
        t += direction
    return t


def threshold(name: str, bn: Op, fan_in: int) -> Op:
    """``sign(BN(z))`` for integer ``z`` in ``[−fan_in, fan_in]`` as per-channel integer thresholds."""
    a = bn.attrs
    slope = a["gamma"].astype(np.float64) / np.sqrt(a["var"].astype(np.float64) + a["eps"])
    beta, mean = a["beta"].astype(np.float64), a["mean"].astype(np.float64)
    tau, direction = np.zeros(len(slope), np.int64), np.ones(len(slope), np.int8)
    limit = fan_in + 1  # beyond every reachable z
    for c, (k, b, mu) in enumerate(zip(slope, beta, mean, strict=True)):
        if k == 0:  # constant output sign(β): z ≥ −limit always holds, z ≥ limit never
            tau[c] = -limit if b >= 0 else limit
            continue
        with np.errstate(over="ignore"):  # a tiny k: the crossing lies beyond every z
            crossing = min(max(mu - b / k, -limit), limit)  # k·(z − μ) + β changes sign here
        direction[c] = 1 if k > 0 else -1
        tau[c] = _boundary(
            lambda z, k=k, b=b, mu=mu: k * (z - mu) + b >= 0, crossing, int(direction[c]), limit
        )
    return Op("threshold", name, {"tau": tau.astype(np.int32), "direction": direction})


def fold_thresholds(ops: list[Op]) -> list[Op]:
    """Binary layer (binary input) → [maxpool] → batch norm → sign becomes
    layer → [maxpool] → threshold, all in integers."""
    ops = list(ops)
    out: list[Op] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        weight = op.weight
        binary = weight is not None and weight.kind == "binary" and op.attrs.get("binary_input")
        j = i + 1 + (i + 1 < len(ops) and ops[i + 1].kind == "maxpool")
        if binary and j + 1 < len(ops) and ops[j].kind == "batchnorm" and ops[j + 1].kind == "sign":
            assert weight is not None  # binary says so
            fan_in = int(np.prod(weight.values.shape[1:]))
            out += ops[i:j] + [threshold(f"{ops[j].name}+{ops[j + 1].name}", ops[j], fan_in)]
            i = j + 2
        else:
            out.append(op)
            i += 1
    return [replace(op) for op in out]
