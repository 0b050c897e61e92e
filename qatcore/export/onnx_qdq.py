"""ONNX export in the standard QDQ pattern, written node by node with ``onnx.helper``.

A quantized weight is an integer initializer feeding ``DequantizeLinear`` directly, which feeds
the Conv or Gemm: the pattern onnxruntime's QDQ fusion, Netron's quantization view and converters
look for. A b-bit weight is stored as its odd codes ``q`` (``Q(w) = (Δ/2)·q``, zero point 0), in
INT4 when every code fits (``|q| ≤ 7``: up to 3 bits, and binary ``±1``), else INT8/INT16/INT32.
The true range ``±(2^b − 1)`` of each layer's codes goes in the model's ``metadata_props``
(``CODE_BOUNDS_KEY``), and ``check_stored_codes`` verifies the initializers keep to it. An
activation quantizer becomes a ``QuantizeLinear``/``DequantizeLinear`` pair (unsigned, zero point
0; UINT4 at 4 bits, else a ``Clip`` at α first and UINT8/UINT16). Binary activations use
``Sign``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from numpy.typing import ArrayLike
from onnx import TensorProto, helper, numpy_helper

from qatcore.export.onnx_inspect import (
    ACTIVATION_BITS_KEY,
    CODE_BOUNDS_KEY,
    INPUT,
    OUTPUT,
    check_stored_codes,
)
from qatcore.export.ops import Op, UnsupportedLayerError, Weight

OPSET = 21

#: signed code types, smallest first: (ONNX type, NumPy dtype of the values, largest |code|)
SIGNED_TYPES = (
    (TensorProto.INT4, np.int8, 7),
    (TensorProto.INT8, np.int8, 127),
    (TensorProto.INT16, np.int16, 2**15 - 1),
    (TensorProto.INT32, np.int32, 2**31 - 1),
)
#: unsigned activation code types: (ONNX type, largest code)
UNSIGNED_TYPES = (
    (TensorProto.UINT4, 15),
    (TensorProto.UINT8, 255),
    (TensorProto.UINT16, 2**16 - 1),
)


def code_bound(weight: Weight) -> int:
    """The largest ``|code|`` of a quantized weight: ``2^b − 1`` (b-bit odd codes) or 1 (binary)."""
    return 1 if weight.kind == "binary" else 2**weight.bits - 1


def code_type(bound: int) -> tuple[int, type]:
    """The smallest signed ONNX integer type (and NumPy dtype) holding codes in ``[−bound, bound]``."""
    return next((onnx_type, dtype) for onnx_type, dtype, top in SIGNED_TYPES if bound <= top)


def check_codes(name: str, weight: Weight) -> None:
    """ValueError unless every code of ``weight`` is within its range (and odd, for b-bit codes)."""
    values, bound = np.asarray(weight.values, np.int64), code_bound(weight)
    if values.size and np.abs(values).max() > bound:
        raise ValueError(
            f"layer {name!r}: weight codes reach {np.abs(values).max()}, outside ±{bound}"
        )
    if weight.kind == "uniform" and values.size and np.any(values % 2 != 1):
        raise ValueError(f"layer {name!r}: {weight.bits}-bit weight codes must be odd")
    if weight.kind == "binary" and values.size and np.any(np.abs(values) != 1):
        raise ValueError(f"layer {name!r}: binary weight codes must be ±1")


def integer_tensor(name: str, values: ArrayLike, onnx_type: int) -> onnx.TensorProto:
    """An integer initializer of ``onnx_type``, stored as raw bytes (INT4/UINT4 packed two to a
    byte), so the file's size does not depend on the values."""
    dtype = helper.tensor_dtype_to_np_dtype(onnx_type)  # ml_dtypes' int4/uint4 for the 4-bit types
    return numpy_helper.from_array(np.asarray(values).astype(dtype), name)


class GraphBuilder:
    """Builds the nodes and initializers of one graph from ops; ``weight``, ``act_quant`` and
    ``sign`` say how quantizers are written (the QONNX builder overrides them)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0
        self.code_bounds: dict[str, dict] = {}
        self.activation_bits: dict[str, int] = {}

    def constant(self, name: str, array) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def tensor(self, tensor: onnx.TensorProto) -> str:
        self.initializers.append(tensor)
        return tensor.name

    def node(self, op_type: str, inputs: list[str], name: str, domain: str = "", **attrs) -> str:
        self.count += 1
        output = f"{name}/{op_type}_{self.count}"
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=output, domain=domain, **attrs)
        )
        return output

    def weight(self, op: Op) -> str:
        """The float weight tensor: an initializer for a float weight; for a coded one, what
        ``coded_weight`` builds, with the codes' initializer and range recorded in ``code_bounds``."""
        weight, name = op.layer_weight(), op.name
        if weight.kind == "float":
            return self.constant(f"{name}.weight", weight.values.astype(np.float32))
        check_codes(name, weight)
        bound = code_bound(weight)
        output, initializer = self.coded_weight(name, weight, bound)
        self.code_bounds[name] = {
            "initializer": initializer,
            "min": -bound,
            "max": bound,
            "bits": weight.bits,
        }
        return output

    def coded_weight(self, name: str, weight: Weight, bound: int) -> tuple[str, str]:
        """Integer codes → DequantizeLinear: the float output and the codes' initializer."""
        onnx_type, _ = code_type(bound)
        codes = self.tensor(integer_tensor(f"{name}.weight_codes", weight.values, onnx_type))
        scale = np.ones(1) if weight.scale is None else np.asarray(weight.scale, np.float64).ravel()
        per_channel = len(scale) > 1
        shape = scale.shape if per_channel else ()
        scale_name = self.constant(f"{name}.weight_scale", scale.astype(np.float32).reshape(shape))
        zero = self.tensor(
            integer_tensor(f"{name}.weight_zero_point", np.zeros(shape, np.int64), onnx_type)
        )
        axis: dict[str, Any] = {"axis": 0} if per_channel else {}
        return self.node("DequantizeLinear", [codes, scale_name, zero], name, **axis), codes

    def act_quant(self, op: Op, x: str) -> str:
        """``clip(x, 0, α)`` rounded to the step ``α/(2^b − 1)``: QuantizeLinear → DequantizeLinear."""
        bits, step, name = op.attrs["bits"], op.attrs["step"], op.name
        levels = 2**bits - 1
        onnx_type, capacity = next(t for t in UNSIGNED_TYPES if levels <= t[1])
        if levels < capacity:  # the integer type alone would saturate above α: Clip first
            # (onnxruntime 1.32's Clip → QuantizeLinear fusion fails on a UINT4 zero point, so a
            # clipped quantizer uses UINT8 or UINT16)
            onnx_type, capacity = next(t for t in UNSIGNED_TYPES[1:] if levels <= t[1])
            low = self.constant(f"{name}.min", np.float32(0.0))
            high = self.constant(f"{name}.max", np.float32(step * levels))
            x = self.node("Clip", [x, low, high], name)
        self.activation_bits[name] = bits
        scale = self.constant(f"{name}.scale", np.float32(step))
        zero = self.tensor(integer_tensor(f"{name}.zero_point", np.zeros((), np.int64), onnx_type))
        return self.node(
            "DequantizeLinear",
            [self.node("QuantizeLinear", [x, scale, zero], name), scale, zero],
            name,
        )

    def sign(self, op: Op, x: str) -> str:
        # qatcore's sign has sign(0) = +1, ONNX's Sign(0) = 0: Sign(Sign(x) + ½) maps {−1, 0, 1} → {−1, 1, 1}
        half = self.constant(f"{op.name}.half", np.float32(0.5))
        return self.node(
            "Sign", [self.node("Add", [self.node("Sign", [x], op.name), half], op.name)], op.name
        )

    def op(self, op: Op, x: str) -> str:  # noqa: C901 — one branch per op kind, read top to bottom
        a, name = op.attrs, op.name
        if op.kind in ("conv", "linear"):
            inputs = [x, self.weight(op)]
            if op.bias is not None:
                inputs.append(self.constant(f"{name}.bias", op.bias.astype(np.float32)))
            if op.kind == "linear":
                return self.node("Gemm", inputs, name, transB=1)
            return self.node(
                "Conv",
                inputs,
                name,
                strides=a["stride"],
                pads=a["padding"] * 2,
                dilations=a["dilation"],
                group=a["groups"],
                kernel_shape=a["kernel"],
            )
        if op.kind == "relu":
            return self.node("Relu", [x], name)
        if op.kind == "residual":  # body(x) + shortcut(x)
            body, shortcut = x, x
            for inner in a["body"]:
                body = self.op(inner, body)
            for inner in a["shortcut"]:
                shortcut = self.op(inner, shortcut)
            return self.node("Add", [body, shortcut], name)
        if op.kind == "silu":  # x·σ(x) (no SiLU op in opset 21)
            return self.node("Mul", [x, self.node("Sigmoid", [x], name)], name)
        if op.kind == "hardswish":
            return self.node("HardSwish", [x], name)
        if op.kind in ("avgpool", "maxpool"):
            attrs = dict(
                kernel_shape=a["kernel"],
                strides=a["stride"],
                pads=a["padding"] * 2,
                ceil_mode=int(a["ceil_mode"]),
            )
            if op.kind == "avgpool":
                return self.node(
                    "AveragePool", [x], name, count_include_pad=int(a["count_include_pad"]), **attrs
                )
            return self.node("MaxPool", [x], name, **attrs)
        if op.kind == "global_avgpool":
            return self.node("GlobalAveragePool", [x], name)
        if op.kind == "flatten":
            return self.node("Flatten", [x], name, axis=1)
        if op.kind == "batchnorm":
            params = [
                self.constant(f"{name}.{key}", a[key].astype(np.float32))
                for key in ("gamma", "beta", "mean", "var")
            ]
            return self.node("BatchNormalization", [x, *params], name, epsilon=a["eps"])
        if op.kind == "affine":  # QuantNorm: y = Q(a)·x + Q(b) per channel
            scale = self.constant(
                f"{name}.scale", a["scale"].astype(np.float32).reshape(1, -1, 1, 1)
            )
            shift = self.constant(
                f"{name}.shift", a["shift"].astype(np.float32).reshape(1, -1, 1, 1)
            )
            return self.node("Add", [self.node("Mul", [x, scale], name), shift], name)
        if op.kind == "hardtanh":
            low = self.constant(f"{name}.min", np.float32(a["min"]))
            high = self.constant(f"{name}.max", np.float32(a["max"]))
            return self.node("Clip", [x, low, high], name)
        if op.kind == "act_quant":
            return self.act_quant(op, x)
        if op.kind == "sign":
            return self.sign(op, x)
        raise UnsupportedLayerError(
            f"cannot export layer {name!r} to ONNX: no ONNX form for op {op.kind!r}"
        )

    def opsets(self) -> list[onnx.OperatorSetIdProto]:
        return [helper.make_opsetid("", OPSET)]

    def model(self, ops: list[Op], input_shape: tuple[int, ...], name: str) -> onnx.ModelProto:
        """The ONNX model computing ``ops`` on a float input of shape ``(batch, *input_shape)``."""
        x = INPUT
        for op in ops:
            x = self.op(op, x)
        self.nodes.append(helper.make_node("Identity", [x], [OUTPUT], name=OUTPUT))
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *input_shape])],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", None])],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=self.opsets(), producer_name="qatcore")
        model.ir_version = 10  # readable by onnxruntime >= 1.20
        helper.set_model_props(
            model,
            {
                CODE_BOUNDS_KEY: json.dumps(self.code_bounds),
                ACTIVATION_BITS_KEY: json.dumps(self.activation_bits),
            },
        )
        return model


def build(ops: list[Op], input_shape: tuple[int, ...], name: str = "qatcore") -> onnx.ModelProto:
    """A QDQ ONNX model (opset 21), checked by ``onnx.checker`` and by ``check_stored_codes``."""
    model = GraphBuilder().model(ops, input_shape, name)
    onnx.checker.check_model(model, full_check=True)
    check_stored_codes(model)
    return model
