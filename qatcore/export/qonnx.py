"""QONNX export: the quantizers as QONNX ``Quant`` and ``BipolarQuant`` nodes, for FINN and hls4ml.

The paper's b-bit weight quantizer ``Q(w) = Δ·round((clip(w, −m, m) + m)/Δ) − m`` has no level at 0:
its levels are the half-integer multiples ``(Δ/2)·q`` with ``q`` odd, ``|q| ≤ 2^b − 1``. Written with
zero point 0 (the only weight quantizer FINN folds, and the only one qonnx gives an integer
datatype), it is one ``Quant`` node with scale ``Δ/2``, zero point 0, bit width ``b + 1``, signed,
narrow (the range ``±(2^b − 1)``), rounding ``ROUND``; the weight initializer holds the levels,
which the node maps to themselves. **What it costs:** one bit per weight in the declared type — a
(b+1)-bit signed integer of which only the 2^b odd values occur (2 → 3 bits, 4 → 5, 8 → 9), so a
consumer that stores weights at their declared width spends ``(b + 1)/b`` times the b bits the
quantizer holds. ``bits_per_weight`` gives both. qonnx's ``InferDataTypes`` reads such a weight as
``SCALEDINT<b+1>``. A per-channel scale (PikeLPN's DHQ) is a scale tensor of one value per output
channel. An activation quantizer is ``Quant`` with scale the step, zero point 0, unsigned; a sign
(binary weights and activations) is ``BipolarQuant`` with scale 1, whose ``sign(0) = +1`` matches
qatcore's. The file has a fixed batch of 1 (``BATCH``) and every tensor's shape, as FINN and hls4ml
take it (``qonnx-cleanup --override-inpsize 1`` is not needed). Three rewrites for those consumers,
each exact: an average pool is a depthwise Conv with weights ``1/(k_h·k_w)`` (qonnx's channels-last
conversion, which hls4ml's front end needs, has no AveragePool), a linear layer without bias gets a
zero bias (qonnx's GemmToMatMul reads Gemm's third input), and Hardswish is ``x·HardSigmoid(x)``
(opset 13 has no HardSwish). Parity is checked with qonnx's own executor,
before and after its cleanup and shape inference (``execute``, ``cleaned``); qonnx is in the
``course`` extra.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from numpy.typing import ArrayLike
from onnx import helper

from qatcore.export.onnx_qdq import GraphBuilder
from qatcore.export.ops import Op, Weight

#: ops after which the channel count is known, and how to read it
CHANNELS = {
    "conv": lambda op: op.weight.values.shape[0],
    "batchnorm": lambda op: len(op.attrs["mean"]),
    "affine": lambda op: np.asarray(op.attrs["scale"]).size,
}

DOMAIN = "qonnx.custom_op.general"
DOMAIN_VERSION = 1
#: the batch the file is written for (FINN and hls4ml take a fixed batch; ``with_batch`` changes it)
BATCH = 1


def bits_per_weight(bits: int) -> dict[str, int]:
    """A b-bit weight quantizer in QONNX: the bits its levels need (``b``) and the width its Quant
    node declares (``b + 1``: odd codes at scale Δ/2, zero point 0)."""
    return {"levels": int(bits), "declared": int(bits) + 1}


class QonnxBuilder(GraphBuilder):
    """``GraphBuilder`` with QONNX quantizer nodes instead of QuantizeLinear/DequantizeLinear,
    average pooling as a depthwise convolution (``pool_as_conv``), and a zero bias on a linear layer
    without one (qonnx's ``GemmToMatMul``, which FINN and hls4ml run first, reads Gemm's third input)."""

    channels: int | None = None

    def model(self, ops: list[Op], input_shape: tuple[int, ...], name: str) -> onnx.ModelProto:
        self.channels = input_shape[0] if len(input_shape) == 3 else None
        return super().model(ops, input_shape, name)

    def op(self, op: Op, x: str) -> str:
        if op.kind == "avgpool" and self.channels is not None and pool_is_a_conv(op):
            return self.pool_as_conv(op, x)
        if op.kind == "hardswish":  # HardSwish needs opset 14; x·HardSigmoid(x) is the same at 13
            gate = self.node("HardSigmoid", [x], op.name, alpha=1.0 / 6, beta=0.5)
            return self.node("Mul", [x, gate], op.name)
        if op.kind == "linear" and op.bias is None:  # qonnx's GemmToMatMul needs Gemm's C input
            op = replace(op, bias=np.zeros(op.layer_weight().values.shape[0], np.float32))
        out = super().op(op, x)
        if op.kind in CHANNELS:
            self.channels = CHANNELS[op.kind](op)
        elif op.kind in ("flatten", "linear", "global_avgpool"):
            self.channels = None
        return out

    def pool_as_conv(self, op: Op, x: str) -> str:
        """A k×k average pool as a depthwise Conv whose weights are all ``1/(k_h·k_w)``, written as
        the code 1 at that scale through a 2-bit ``Quant``: the same sums, in a form that qonnx's
        channels-last conversion (which hls4ml's QONNX front end needs) and FINN's weight folding
        take, where ``AveragePool`` has no channels-last form."""
        a, channels = op.attrs, self.channels
        kernel = a["kernel"]
        scale = np.float32(1.0 / (kernel[0] * kernel[1]))
        ones = self.constant(
            f"{op.name}.weight", np.full((channels, 1, *kernel), scale, np.float32)
        )
        weight = self.quant(ones, f"{op.name}.weight_quant", scale, 2, signed=True, narrow=True)
        return self.node(
            "Conv",
            [x, weight],
            op.name,
            strides=a["stride"],
            pads=a["padding"] * 2,
            dilations=[1, 1],
            group=channels,
            kernel_shape=kernel,
        )

    def quant(
        self, x: str, name: str, scale: ArrayLike, bits: int, signed: bool, narrow: bool
    ) -> str:
        """A ``Quant`` node with zero point 0."""
        inputs = [
            x,
            self.constant(f"{name}.scale", np.asarray(scale, np.float32)),
            self.constant(f"{name}.zero_point", np.float32(0.0)),
            self.constant(f"{name}.bit_width", np.float32(bits)),
        ]
        return self.node(
            "Quant",
            inputs,
            name,
            domain=DOMAIN,
            signed=int(signed),
            narrow=int(narrow),
            rounding_mode="ROUND",
        )

    def bipolar(self, x: str, name: str) -> str:
        return self.node(
            "BipolarQuant",
            [x, self.constant(f"{name}.scale", np.float32(1.0))],
            name,
            domain=DOMAIN,
        )

    def coded_weight(self, name: str, weight: Weight, bound: int) -> tuple[str, str]:
        """The weight's levels (or signs) as a float initializer → Quant (or BipolarQuant): odd codes
        ``q`` at scale ``Δ/2``, ``b + 1`` bits signed and narrow, zero point 0."""
        initializer = f"{name}.weight"
        if weight.kind == "binary":
            signs = self.constant(initializer, weight.values.astype(np.float32))
            return self.bipolar(signs, f"{name}.weight_quant"), initializer
        levels = weight.dequantized().astype(np.float32)
        half_step = np.asarray(weight.scale, np.float64).ravel()
        shape = (-1,) + (1,) * (levels.ndim - 1) if len(half_step) > 1 else ()
        output = self.quant(
            self.constant(initializer, levels),
            f"{name}.weight_quant",
            half_step.reshape(shape),
            bits_per_weight(weight.bits)["declared"],
            signed=True,
            narrow=True,
        )
        return output, initializer

    def act_quant(self, op: Op, x: str) -> str:
        self.activation_bits[op.name] = op.attrs["bits"]
        return self.quant(
            x, op.name, np.float32(op.attrs["step"]), op.attrs["bits"], signed=False, narrow=False
        )

    def sign(self, op: Op, x: str) -> str:
        return self.bipolar(x, op.name)

    def opsets(self) -> list[onnx.OperatorSetIdProto]:
        return [helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]


def pool_is_a_conv(op: Op) -> bool:
    """Whether an average pool equals a depthwise conv with constant weights: no ceil mode, and
    padded zeros counted in the mean (or no padding)."""
    a = op.attrs
    return not a["ceil_mode"] and (a["count_include_pad"] or not any(a["padding"]))


def build(ops: list[Op], input_shape: tuple[int, ...], name: str = "qatcore") -> onnx.ModelProto:
    """A QONNX model computing ``ops`` on a float input ``(BATCH, *input_shape)``, every tensor's
    shape given (qonnx's shape inference), so qonnx's executor runs the file as saved."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    model = QonnxBuilder().model(ops, input_shape, name)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = BATCH
    model = ModelWrapper(model).transform(InferShapes()).model
    onnx.checker.check_model(model)
    return model


def with_batch(model: onnx.ModelProto, batch: int):
    """A qonnx ``ModelWrapper`` of the model with its batch dimension fixed and every shape inferred
    (qonnx's executor needs both)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in (*fixed.graph.input, *fixed.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    del fixed.graph.value_info[:]
    return ModelWrapper(fixed).transform(InferShapes())


def execute(model: onnx.ModelProto, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's outputs for ``x`` (N×C×H×W) from qonnx's own executor, in batches."""
    from qonnx.core.onnx_exec import execute_onnx

    x = np.ascontiguousarray(x, np.float32)
    outputs = []
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size]
        wrapper = with_batch(model, len(chunk))
        graph = wrapper.model.graph  # names as given (qonnx's cleanup renames them)
        outputs.append(execute_onnx(wrapper, {graph.input[0].name: chunk})[graph.output[0].name])
    return np.concatenate(outputs)


def cleaned(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model after qonnx's cleanup (constant folding, tidy names) and shape inference."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    return cleanup_model(ModelWrapper(model)).transform(InferShapes()).model
