"""QONNX export: the quantizers as QONNX ``Quant`` and ``BipolarQuant`` nodes, for FINN and hls4ml.

The paper's b-bit weight quantizer ``Q(w) = Δ·round((clip(w, −m, m) + m)/Δ) − m`` is exactly one
``Quant`` node: scale ``Δ``, zero point ``(2^b − 1)/2``, bit width ``b``, unsigned, not narrow,
rounding ``ROUND`` (its codes ``0 … 2^b − 1`` are the levels' indices). The weight initializer holds
the quantized levels, which the node maps to themselves. A per-channel scale (PikeLPN's DHQ) is a
scale tensor of one value per output channel. An activation quantizer is ``Quant`` with scale the
step, zero point 0; a sign (binary weights and activations) is ``BipolarQuant`` with scale 1,
whose ``sign(0) = +1`` matches qatcore's. Parity is checked with qonnx's own executor, before and
after its cleanup and shape inference (``execute``, ``cleaned``); qonnx is in the ``course`` extra.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from qatcore.export.onnx_qdq import GraphBuilder
from qatcore.export.ops import Op, Weight

DOMAIN = "qonnx.custom_op.general"
DOMAIN_VERSION = 1


class QonnxBuilder(GraphBuilder):
    """``GraphBuilder`` with QONNX quantizer nodes instead of QuantizeLinear/DequantizeLinear."""

    def quant(self, x: str, name: str, scale: np.ndarray, zero_point: float, bits: int) -> str:
        inputs = [
            x,
            self.constant(f"{name}.scale", np.asarray(scale, np.float32)),
            self.constant(f"{name}.zero_point", np.float32(zero_point)),
            self.constant(f"{name}.bit_width", np.float32(bits)),
        ]
        return self.node(
            "Quant", inputs, name, domain=DOMAIN, signed=0, narrow=0, rounding_mode="ROUND"
        )

    def bipolar(self, x: str, name: str) -> str:
        return self.node(
            "BipolarQuant",
            [x, self.constant(f"{name}.scale", np.float32(1.0))],
            name,
            domain=DOMAIN,
        )

    def coded_weight(self, name: str, weight: Weight, bound: int) -> tuple[str, str]:
        """The weight's levels (or signs) as a float initializer → Quant (or BipolarQuant)."""
        initializer = f"{name}.weight"
        if weight.kind == "binary":
            signs = self.constant(initializer, weight.values.astype(np.float32))
            return self.bipolar(signs, f"{name}.weight_quant"), initializer
        levels = weight.dequantized().astype(np.float32)
        half_step = np.asarray(weight.scale, np.float64).ravel()
        shape = (-1,) + (1,) * (levels.ndim - 1) if len(half_step) > 1 else ()
        step = (2 * half_step).reshape(shape)
        output = self.quant(
            self.constant(initializer, levels),
            f"{name}.weight_quant",
            step,
            (2**weight.bits - 1) / 2,
            weight.bits,
        )
        return output, initializer

    def act_quant(self, op: Op, x: str) -> str:
        self.activation_bits[op.name] = op.attrs["bits"]
        return self.quant(x, op.name, np.float32(op.attrs["step"]), 0.0, op.attrs["bits"])

    def sign(self, op: Op, x: str) -> str:
        return self.bipolar(x, op.name)

    def opsets(self) -> list[onnx.OperatorSetIdProto]:
        return [helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]


def build(ops: list[Op], input_shape: tuple[int, ...], name: str = "qatcore") -> onnx.ModelProto:
    """A QONNX model computing ``ops`` on a float input ``(batch, *input_shape)``."""
    model = QonnxBuilder().model(ops, input_shape, name)
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
