"""A NumPy reference inference of ``graph.Op`` lists: what a deployment without PyTorch computes.

Float and b-bit layers run in float64 on the dequantized integers. A binary layer whose input is
binary (±1) runs as the papers' hardware would: input and weight signs packed 8 per byte, then
``x·w = 2·popcount(XNOR(x, w)) − n`` over the valid (non-padding) positions, an integer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qatcore.export.ops import Op, UnsupportedLayerError

CHUNK_BYTES = 32 * 2**20  # cap on the XNOR intermediate, so big layers run in pieces


def _pad(x: np.ndarray, padding: list[int], value: float = 0.0) -> np.ndarray:
    (ph, pw) = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(
    x: np.ndarray, kernel: list[int], stride: list[int], dilation: Sequence[int] = (1, 1)
) -> np.ndarray:
    """Sliding windows of N×C×H×W as N×C×H'×W'×kh×kw."""
    kh, kw = kernel
    view = np.lib.stride_tricks.sliding_window_view(
        x, ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), axis=(2, 3)
    )
    return view[:, :, :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]]


def _out_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # PyTorch: last window must start inside
        out -= 1
    return out


def _patches(x: np.ndarray, op: Op, pad_value: float = 0.0) -> tuple[np.ndarray, tuple[int, int]]:
    """im2col: N×C×H×W → (N·H'·W')×(C·kh·kw) rows, with the output size (one group)."""
    a = op.attrs
    windows = _windows(_pad(x, a["padding"], pad_value), a["kernel"], a["stride"], a["dilation"])
    n, c, h, w = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, -1), (h, w)


def _to_maps(rows: np.ndarray, n: int, size: tuple[int, int]) -> np.ndarray:
    return rows.reshape(n, size[0], size[1], -1).transpose(0, 3, 1, 2)


def xnor_popcount(x_bits: np.ndarray, valid_bits: np.ndarray, w_bits: np.ndarray) -> np.ndarray:
    """``Σ x·w`` over valid positions for packed signs: rows R×B bytes, weights K×B → R×K integers."""
    rows, nbytes = x_bits.shape
    step = max(1, CHUNK_BYTES // max(1, len(w_bits) * nbytes))
    valid = np.bitwise_count(valid_bits).sum(axis=1, dtype=np.int64)[:, None]
    out = np.empty((rows, len(w_bits)), np.int64)
    for i in range(0, rows, step):
        agree = (
            ~(x_bits[i : i + step, None, :] ^ w_bits[None, :, :])
            & valid_bits[i : i + step, None, :]
        )
        out[i : i + step] = np.bitwise_count(agree).sum(axis=2, dtype=np.int64)
    return 2 * out - valid


def pack_signs(values: np.ndarray) -> np.ndarray:
    """Rows of ±1 (last axis) as bits, 8 per byte: 1 for +1, 0 for −1."""
    return np.packbits(values > 0, axis=-1)


def _binary_dot(x: np.ndarray, op: Op) -> np.ndarray:
    """Integer ``x·sign(W)`` of a binary layer with ±1 input, by XNOR and popcount."""
    values = op.layer_weight().values
    signs = values.reshape(len(values), -1)
    w_bits = op.attrs.get("packed_weight")
    w_bits = pack_signs(signs) if w_bits is None else w_bits
    if op.kind == "linear":
        return xnor_popcount(pack_signs(x), np.packbits(np.ones_like(x, bool), axis=-1), w_bits)
    rows, size = _patches(x, op)
    valid, _ = _patches(np.ones_like(x), op)  # 0 where the window covers padding
    z = xnor_popcount(pack_signs(rows), np.packbits(valid > 0, axis=-1), w_bits)
    return _to_maps(z, len(x), size)


def _dense(x: np.ndarray, op: Op) -> np.ndarray:
    weight = op.layer_weight().dequantized()
    if op.kind == "linear":
        return x @ weight.T
    groups = op.attrs["groups"]
    c_in, c_out = x.shape[1] // groups, len(weight) // groups
    maps = []
    for g in range(groups):  # a grouped (e.g. depthwise) conv: each group of channels on its own
        rows, size = _patches(x[:, g * c_in : (g + 1) * c_in], op)
        kernel = weight[g * c_out : (g + 1) * c_out].reshape(c_out, -1)
        maps.append(_to_maps(rows @ kernel.T, len(x), size))
    return np.concatenate(maps, axis=1)


def _pool(x: np.ndarray, op: Op) -> np.ndarray:
    a = op.attrs
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
    oh = _out_size(x.shape[2], kh, sh, ph, a["ceil_mode"])
    ow = _out_size(x.shape[3], kw, sw, pw, a["ceil_mode"])
    extra_h, extra_w = (
        max(0, (oh - 1) * sh + kh - x.shape[2] - 2 * ph),
        max(0, (ow - 1) * sw + kw - x.shape[3] - 2 * pw),
    )
    fill = -np.inf if op.kind == "maxpool" else 0.0
    padded = np.pad(
        x.astype(np.float64),
        ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)),
        constant_values=fill,
    )
    windows = _windows(padded, a["kernel"], a["stride"])[:, :, :oh, :ow]
    if op.kind == "maxpool":
        result = windows.max(axis=(4, 5))
        return result.astype(x.dtype) if x.dtype.kind == "i" else result
    height, width = x.shape[2:]
    if a["count_include_pad"]:  # padding counts, the ceil-mode overhang does not
        ones = np.pad(np.ones((height + 2 * ph, width + 2 * pw)), ((0, extra_h), (0, extra_w)))
    else:
        ones = np.pad(np.ones((height, width)), ((ph, ph + extra_h), (pw, pw + extra_w)))
    counts = _windows(ones[None, None], a["kernel"], a["stride"])[:, :, :oh, :ow].sum(axis=(4, 5))
    return windows.sum(axis=(4, 5)) / counts


def _channel(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def step(x: np.ndarray, op: Op) -> np.ndarray:  # noqa: C901 — one branch per op kind, read top to bottom
    """One op applied to ``x`` (float64, or int8 signs for binary layers)."""
    a = op.attrs
    if op.kind in ("conv", "linear"):
        binary = op.layer_weight().kind == "binary" and x.dtype == np.int8
        out = _binary_dot(x, op) if binary else _dense(x.astype(np.float64), op)
        return out if op.bias is None else out + _channel(op.bias, out)
    if op.kind == "relu":
        return np.maximum(x, 0)
    if op.kind == "residual":
        return infer(a["body"], x) + infer(a["shortcut"], x)
    if op.kind == "silu":
        return x / (1 + np.exp(-x))
    if op.kind == "hardswish":
        return x * np.clip(x + 3, 0, 6) / 6
    if op.kind in ("avgpool", "maxpool"):
        return _pool(x, op)
    if op.kind == "flatten":
        return x.reshape(len(x), -1)
    if op.kind == "batchnorm":
        scale = a["gamma"].astype(np.float64) / np.sqrt(a["var"].astype(np.float64) + a["eps"])
        return (x - _channel(a["mean"], x)) * _channel(scale, x) + _channel(a["beta"], x)
    if op.kind == "hardtanh":
        return np.clip(x, a["min"], a["max"])
    if op.kind == "global_avgpool":
        return x.mean(axis=(2, 3), keepdims=True)
    if op.kind == "affine":
        return x * _channel(a["scale"], x) + _channel(a["shift"], x)
    if op.kind == "act_quant":  # clip to [0, α], round to the step α/(2^b − 1) (half to even)
        levels = 2 ** a["bits"] - 1
        return np.round(np.clip(x / a["step"], 0, levels)) * a["step"]
    if op.kind == "sign":
        return np.where(x >= 0, 1, -1).astype(np.int8)
    if op.kind == "threshold":  # +1 where z ≥ τ (direction +1) or z ≤ τ (direction −1)
        above = x >= _channel(a["tau"], x)
        below = x <= _channel(a["tau"], x)
        up = _channel(a["direction"], x) > 0
        return np.where(np.where(up, above, below), 1, -1).astype(np.int8)
    raise UnsupportedLayerError(
        f"reference inference: no NumPy form for layer {op.name!r} ({op.kind})"
    )


def infer(ops: list[Op], x: np.ndarray) -> np.ndarray:
    """The ops applied to ``x`` (N×C×H×W floats) in NumPy; float64 outputs."""
    out = np.asarray(x, np.float64)
    for op in ops:
        out = step(out, op)
    return out.astype(np.float64)
