"""The packed format: quantized weights at their own bit width, in one ``.npz`` file.

A binary weight takes 1 bit per value (signs packed 8 per byte) beside its per-channel scale; a
b-bit weight takes b bits per value (its level index ``code`` in 0 … 2^b − 1, little-endian bit
planes packed 8 per byte) beside ``Δ/2``; float layers stay float32. The layer list is stored
as JSON in the same file, so ``load`` needs nothing but NumPy (``allow_pickle=False``) and
``reference.infer`` runs it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from qatcore.export.ops import Op, UnsupportedLayerError, Weight

FORMAT_VERSION = 1


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integer ``codes`` (each < 2**bits) as ``bits`` bits apiece, packed 8 per byte."""
    flat = np.asarray(codes, np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits - 1}] for bits={bits}")
    planes = (flat[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).ravel())


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_codes``: ``count`` unsigned codes of ``bits`` bits."""
    planes = np.unpackbits(np.asarray(packed, np.uint8))[: count * bits].reshape(count, bits)
    return (planes.astype(np.int64) << np.arange(bits)).sum(axis=1)


def _pack_weight(weight: Weight) -> np.ndarray:
    if weight.kind == "float":
        return weight.values.astype(np.float32)
    if weight.kind == "binary":
        return np.packbits(weight.values.ravel() > 0)
    return pack_codes((weight.values + (2**weight.bits - 1)) // 2, weight.bits)


def _unpack_weight(header: dict, packed: np.ndarray, scale: np.ndarray | None) -> Weight:
    shape, kind, bits = tuple(header["shape"]), header["kind"], header["bits"]
    count = int(np.prod(shape))
    if kind == "float":
        return Weight("float", packed.reshape(shape))
    if kind == "binary":
        signs = np.where(np.unpackbits(packed)[:count] > 0, 1, -1).astype(np.int8)
        return Weight("binary", signs.reshape(shape), 1, scale)
    odd = 2 * unpack_codes(packed, bits, count) - (2**bits - 1)
    return Weight("uniform", odd.reshape(shape).astype(np.int32), bits, scale, header["m"])


def to_bytes(ops: list[Op], info: dict | None = None) -> bytes:
    """The ops (and a JSON-able ``info`` dict) as the bytes of an uncompressed ``.npz``."""
    arrays: dict[str, np.ndarray] = {}
    layers = []
    if branched := [op.name for op in ops if op.kind == "residual"]:
        raise UnsupportedLayerError(
            f"the packed format holds plain chains; residual block(s) {branched} need the onnx, "
            "qonnx or pt2 format"
        )
    for i, op in enumerate(ops):
        attrs, array_attrs = {}, []
        for key, value in op.attrs.items():
            if isinstance(value, np.ndarray):
                arrays[f"{i}.attr.{key}"] = value
                array_attrs.append(key)
            else:
                attrs[key] = value
        layer = {"kind": op.kind, "name": op.name, "attrs": attrs, "array_attrs": array_attrs}
        if op.weight is not None:
            w = op.weight
            layer["weight"] = {
                "kind": w.kind,
                "bits": w.bits,
                "shape": list(w.values.shape),
                "m": w.m,
            }
            arrays[f"{i}.weight"] = _pack_weight(w)
            if w.scale is not None:
                arrays[f"{i}.scale"] = np.asarray(w.scale, np.float64)
        if op.bias is not None:
            arrays[f"{i}.bias"] = op.bias.astype(np.float32)
        layers.append(layer)
    header = {
        "format": "qatcore-packed",
        "version": FORMAT_VERSION,
        "layers": layers,
        "info": info or {},
    }
    arrays["graph.json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stubs read a key as allow_pickle
    return buffer.getvalue()


def load(path: str | Path) -> tuple[list[Op], dict]:
    """The ops and the info dict of a packed file (read without unpickling)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    header = json.loads(arrays.pop("graph.json").tobytes())
    if header.get("format") != "qatcore-packed" or header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} is not a qatcore packed file of version {FORMAT_VERSION}")
    ops = []
    for i, layer in enumerate(header["layers"]):
        attrs = dict(layer["attrs"])
        attrs.update({key: arrays[f"{i}.attr.{key}"] for key in layer["array_attrs"]})
        weight = None
        if "weight" in layer:
            weight = _unpack_weight(
                layer["weight"], arrays[f"{i}.weight"], arrays.get(f"{i}.scale")
            )
        ops.append(Op(layer["kind"], layer["name"], attrs, weight, arrays.get(f"{i}.bias")))
    return ops, header["info"]
