"""ONNX export written node by node with ``onnx.helper``, so sub-8-bit ranges survive.

A b-bit weight is an integer initializer of odd codes ``q`` followed by
``Clip(q, −(2^b−1), 2^b−1)`` and ``DequantizeLinear(·, Δ/2, 0)``: the clip bounds are in the
graph, where a runtime that executes integer kernels can read the true range (PyTorch's own
exporters widen every range to 8 bits). Binary weights are ``±1`` int8 initializers with a
per-channel scale; binary activations use ``Sign``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qatcore.export.ops import Op, UnsupportedLayerError

OPSET = 21
INPUT, OUTPUT = "input", "logits"


def code_type(bits: int) -> tuple[int, type]:
    """The smallest ONNX integer type (and NumPy dtype) holding the odd codes of ``bits`` bits."""
    if bits <= 7:
        return TensorProto.INT8, np.int8
    return TensorProto.INT32, np.int32


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.count += 1
        output = f"{name}/{op_type}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def weight(self, op: Op) -> str:
        """The float weight tensor: an initializer, or integer codes → Clip → DequantizeLinear."""
        weight, name = op.weight, op.name
        if weight.kind == "float":
            return self.constant(f"{name}.weight", weight.values.astype(np.float32))
        if weight.kind == "uniform":
            bound = 2**weight.bits - 1
            _, dtype = code_type(weight.bits)
            codes = self.constant(f"{name}.weight_codes", weight.values.astype(dtype))
            low = self.constant(f"{name}.code_min", np.array(-bound, dtype))
            high = self.constant(f"{name}.code_max", np.array(bound, dtype))
            clipped = self.node("Clip", [codes, low, high], name)
            scale = self.constant(f"{name}.weight_scale", np.float32(weight.scale[0]))
            zero = self.constant(f"{name}.weight_zero_point", np.array(0, dtype))
            return self.node("DequantizeLinear", [clipped, scale, zero], name)
        signs = self.constant(f"{name}.weight_sign", weight.values.astype(np.int8))
        scale = self.constant(f"{name}.weight_scale", np.float32(1.0))  # binary layers have no scale
        zero = self.constant(f"{name}.weight_zero_point", np.array(0, np.int8))
        return self.node("DequantizeLinear", [signs, scale, zero], name)

    def op(self, op: Op, x: str) -> str:
        a, name = op.attrs, op.name
        if op.kind in ("conv", "linear"):
            inputs = [x, self.weight(op)]
            if op.bias is not None:
                inputs.append(self.constant(f"{name}.bias", op.bias.astype(np.float32)))
            if op.kind == "linear":
                return self.node("Gemm", inputs, name, transB=1)
            return self.node("Conv", inputs, name, strides=a["stride"], pads=a["padding"] * 2,
                             dilations=a["dilation"], group=a["groups"], kernel_shape=a["kernel"])
        if op.kind == "relu":
            return self.node("Relu", [x], name)
        if op.kind in ("avgpool", "maxpool"):
            attrs = dict(kernel_shape=a["kernel"], strides=a["stride"], pads=a["padding"] * 2,
                         ceil_mode=int(a["ceil_mode"]))
            if op.kind == "avgpool":
                return self.node("AveragePool", [x], name, count_include_pad=int(a["count_include_pad"]), **attrs)
            return self.node("MaxPool", [x], name, **attrs)
        if op.kind == "flatten":
            return self.node("Flatten", [x], name, axis=1)
        if op.kind == "batchnorm":
            params = [self.constant(f"{name}.{key}", a[key].astype(np.float32))
                      for key in ("gamma", "beta", "mean", "var")]
            return self.node("BatchNormalization", [x, *params], name, epsilon=a["eps"])
        if op.kind == "hardtanh":
            low = self.constant(f"{name}.min", np.float32(a["min"]))
            high = self.constant(f"{name}.max", np.float32(a["max"]))
            return self.node("Clip", [x, low, high], name)
        if op.kind == "sign":
            # qatcore's sign has sign(0) = +1, ONNX's Sign(0) = 0: Sign(Sign(x) + ½) maps {−1, 0, 1} → {−1, 1, 1}
            half = self.constant(f"{name}.half", np.float32(0.5))
            return self.node("Sign", [self.node("Add", [self.node("Sign", [x], name), half], name)], name)
        raise UnsupportedLayerError(f"cannot export layer {name!r} to ONNX: no ONNX form for op {op.kind!r}")


def build(ops: list[Op], input_shape: tuple[int, ...], name: str = "qatcore") -> onnx.ModelProto:
    """An ONNX model (opset 21) computing ``ops`` on a float input of shape ``(batch, *input_shape)``."""
    builder = _Builder()
    x = INPUT
    for op in ops:
        x = builder.op(op, x)
    builder.nodes.append(helper.make_node("Identity", [x], [OUTPUT], name=OUTPUT))
    graph = helper.make_graph(
        builder.nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", None])],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="qatcore")
    model.ir_version = 10  # readable by onnxruntime >= 1.20
    onnx.checker.check_model(model, full_check=True)
    return model


def node_types(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the graph has."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def clip_bounds(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """The integer bounds of every Clip applied to integer weight codes, by layer name."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    bounds = {}
    for node in model.graph.node:
        if node.op_type == "Clip" and node.input[0] in values and values[node.input[0]].dtype.kind == "i":
            layer = node.name.split("/")[0]
            bounds[layer] = (int(values[node.input[1]]), int(values[node.input[2]]))
    return bounds


def session(path_or_bytes, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else path_or_bytes
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The session's outputs for ``x`` (float32, N×C×H×W), in batches."""
    x = np.ascontiguousarray(x, np.float32)
    return np.concatenate([sess.run([OUTPUT], {INPUT: x[i : i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])
