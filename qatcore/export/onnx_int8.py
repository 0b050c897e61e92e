"""An 8-bit QDQ variant of the ONNX export, written so onnxruntime runs integer kernels.

onnxruntime fuses ``DequantizeLinear → Conv/Gemm → QuantizeLinear`` into ``QLinearConv``/``QGemm``
only when the input, the weight and the bias all come through ``DequantizeLinear`` at 8 bits
(bias INT32) with integer zero points. The standard export does not: its 4-bit weights stay
``DequantizeLinear`` + float ``Conv`` (no CPU kernel takes INT4), and its float activations are not
quantized at all. This variant quantizes, per conv/linear layer:

- the input to UINT8 with an integer zero point, its range calibrated on the examples given
  (``calibrate``): the one step the standard file does not take, so it changes the outputs;
- the weight to INT8, zero point 0: exactly when it is a b-bit weight with ``b ≤ 7`` (odd codes
  ``|q| ≤ 127`` at scale ``Δ/2``) or binary, else (float, 8-bit) re-quantized per output channel;
- the bias to INT32 at scale ``s_x·s_w`` (zero point 0);
- the output through a QuantizeLinear/DequantizeLinear pair (after the ReLU that follows it, which
  onnxruntime then drops into the UINT8 range), except the network's last layer, left float.

``int8_report`` says which layers kept their weights exactly. What runs is checked on onnxruntime's
optimized graph (``qatcore.export.onnx_inspect.optimized_node_types``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from qatcore.export import reference
from qatcore.export.onnx_qdq import GraphBuilder, integer_tensor
from qatcore.export.ops import Op, UnsupportedLayerError, Weight

#: examples used to calibrate the activation ranges (the first ones of those given)
CALIBRATION_EXAMPLES = 256


def calibrate(ops: list[Op], x: np.ndarray) -> dict[str, tuple[float, float]]:
    """The range ``(min, max)`` of each conv/linear layer's input (key ``name``) and output (key
    ``name + ":out"``, after the ReLU that follows it, if one does), from the NumPy reference on
    the first ``CALIBRATION_EXAMPLES`` of ``x``."""
    out = np.asarray(x[:CALIBRATION_EXAMPLES], np.float64)
    ranges: dict[str, tuple[float, float]] = {}
    for index, op in enumerate(ops):
        if op.kind in ("conv", "linear"):
            ranges[op.name] = (float(out.min()), float(out.max()))
        out = reference.step(out, op)
        if op.kind in ("conv", "linear"):
            after = np.maximum(out, 0) if _relu_follows(ops, index) else out
            ranges[f"{op.name}:out"] = (float(after.min()), float(after.max()))
    return ranges


def _relu_follows(ops: list[Op], index: int) -> bool:
    return index + 1 < len(ops) and ops[index + 1].kind == "relu"


def uint8_grid(low: float, high: float) -> tuple[float, int]:
    """Scale and integer zero point of a UINT8 grid covering ``[min(low, 0), max(high, 0)]``."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 if high > low else 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


def int8_weight(weight: Weight) -> tuple[np.ndarray, np.ndarray, bool]:
    """INT8 codes, their scale (one per output channel, or one) and whether they are exact."""
    if weight.kind == "binary":
        return weight.values.astype(np.int8), np.ones(1), True
    if weight.kind == "uniform" and 2**weight.bits - 1 <= 127:
        return weight.values.astype(np.int8), np.asarray(weight.scale, np.float64).ravel(), True
    values = weight.dequantized()
    flat = np.abs(values.reshape(len(values), -1)).max(axis=1)
    scale = np.where(flat > 0, flat / 127, 1.0)
    codes = np.round(values / scale.reshape((-1,) + (1,) * (values.ndim - 1)))
    return np.clip(codes, -127, 127).astype(np.int8), scale, False


class Int8Builder(GraphBuilder):
    """``GraphBuilder`` writing every conv/linear layer as 8-bit QDQ (see the module docstring)."""

    def __init__(self, ranges: dict[str, tuple[float, float]]) -> None:
        super().__init__()
        self.ranges = ranges
        self.exact: dict[str, bool] = {}
        self.relu_done = False

    def model(self, ops: list[Op], input_shape: tuple[int, ...], name: str) -> onnx.ModelProto:
        self.ops = ops
        return super().model(ops, input_shape, name)

    def qdq(self, x: str, name: str, scale: float, zero_point: int) -> str:
        s = self.constant(f"{name}.scale", np.float32(scale))
        z = self.tensor(
            integer_tensor(f"{name}.zero_point", np.uint8(zero_point), TensorProto.UINT8)
        )
        return self.node(
            "DequantizeLinear", [self.node("QuantizeLinear", [x, s, z], name), s, z], name
        )

    def op(self, op: Op, x: str) -> str:
        if (
            op.kind == "relu" and self.relu_done
        ):  # already applied before the layer's QuantizeLinear
            self.relu_done = False
            return x
        self.relu_done = False
        if op.kind not in ("conv", "linear"):
            return super().op(op, x)
        index = next(i for i, o in enumerate(self.ops) if o is op)
        x_scale, x_zero = uint8_grid(*self.ranges[op.name])
        x = self.qdq(x, f"{op.name}.input", x_scale, x_zero)
        codes, w_scale, exact = int8_weight(op.layer_weight())
        self.exact[op.name] = exact
        per_channel = len(w_scale) > 1
        shape = w_scale.shape if per_channel else ()
        axis: dict[str, Any] = {"axis": 0} if per_channel else {}
        w = self.node(
            "DequantizeLinear",
            [
                self.tensor(integer_tensor(f"{op.name}.weight_codes", codes, TensorProto.INT8)),
                self.constant(f"{op.name}.weight_scale", w_scale.astype(np.float32).reshape(shape)),
                self.tensor(
                    integer_tensor(
                        f"{op.name}.weight_zero_point", np.zeros(shape), TensorProto.INT8
                    )
                ),
            ],
            op.name,
            **axis,
        )
        inputs = [x, w]
        if op.bias is not None:
            b_scale = (np.float32(x_scale) * w_scale.astype(np.float32)).astype(np.float32)
            b_scale = np.broadcast_to(b_scale, (len(op.bias),)).copy()
            b_codes = np.round(op.bias.astype(np.float64) / b_scale).astype(np.int32)
            inputs.append(
                self.node(
                    "DequantizeLinear",
                    [
                        self.tensor(
                            integer_tensor(f"{op.name}.bias_codes", b_codes, TensorProto.INT32)
                        ),
                        self.constant(f"{op.name}.bias_scale", b_scale),
                        self.tensor(
                            integer_tensor(
                                f"{op.name}.bias_zero_point",
                                np.zeros(len(b_codes)),
                                TensorProto.INT32,
                            )
                        ),
                    ],
                    op.name,
                    axis=0,
                )
            )
        if op.kind == "linear":
            out = self.node("Gemm", inputs, op.name, transB=1)
        else:
            a = op.attrs
            out = self.node(
                "Conv",
                inputs,
                op.name,
                strides=a["stride"],
                pads=a["padding"] * 2,
                dilations=a["dilation"],
                group=a["groups"],
                kernel_shape=a["kernel"],
            )
        if index == len(self.ops) - 1:
            return out  # the logits stay float (QGemm writes float)
        if _relu_follows(self.ops, index):
            out, self.relu_done = self.node("Relu", [out], op.name), True
        return self.qdq(out, f"{op.name}.output", *uint8_grid(*self.ranges[f"{op.name}:out"]))


def build(
    ops: list[Op], input_shape: tuple[int, ...], x: np.ndarray, name: str = "qatcore"
) -> tuple[onnx.ModelProto, dict[str, bool]]:
    """The 8-bit QDQ model calibrated on ``x``, and for each conv/linear layer whether its weight
    was kept exactly (True) or re-quantized to INT8 (False)."""
    if branched := [op.name for op in ops if op.kind == "residual"]:
        raise UnsupportedLayerError(
            f"the 8-bit variant takes plain chains; residual block(s) {branched}: export them "
            "without int8"
        )
    builder = Int8Builder(calibrate(ops, x))
    model = builder.model(ops, input_shape, name)
    onnx.checker.check_model(model, full_check=True)
    return model, builder.exact
