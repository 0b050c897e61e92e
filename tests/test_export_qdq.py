"""The standard QDQ pattern node by node, exact layer matching, the PikeLPN model's lowerings, and
an export whose parity fails leaving its folder as it was."""

import json

import numpy as np
import pytest
import torch
from helpers import random_batch_norm_statistics
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from strategies import examples
from torch import nn

import qatcore
from qatcore import data, zoo
from qatcore.cost.pikelpn_layers import ActQuant, PikeConv2d
from qatcore.estimators.models import MNISTCNN
from qatcore.export import ParityError, export, graph, onnx_inspect, onnx_qdq, onnx_run, reference
from qatcore.export.ops import Op, UnsupportedLayerError, Weight


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_the_2_bit_cnn_is_the_standard_qdq_pattern_node_by_node():
    proto = onnx_qdq.build(graph.lower(MNISTCNN(bits=2, image_size=8).eval()), (1, 8, 8))
    assert onnx_inspect.pattern(proto) == [
        (
            "DequantizeLinear",
            ["INT4", "FLOAT", "INT4"],
        ),  # codes → DequantizeLinear, no Clip between
        ("Conv", ["input", "DequantizeLinear", "FLOAT"]),
        ("Relu", ["Conv"]),
        ("AveragePool", ["Relu"]),
        ("DequantizeLinear", ["INT4", "FLOAT", "INT4"]),
        ("Conv", ["AveragePool", "DequantizeLinear", "FLOAT"]),
        ("Relu", ["Conv"]),
        ("AveragePool", ["Relu"]),
        ("Flatten", ["AveragePool"]),
        ("Gemm", ["Flatten", "FLOAT", "FLOAT"]),  # the float classifier stays float
        ("Relu", ["Gemm"]),
        ("Gemm", ["Relu", "FLOAT", "FLOAT"]),
        ("Identity", ["Gemm"]),
    ]
    assert onnx_inspect.check_stored_codes(proto) == {"0": (-3, 3), "3": (-3, 3)}
    assert onnx_inspect.qdq_weights(proto) == {"0": ("INT4", "Conv"), "3": ("INT4", "Conv")}
    codes = next(t for t in proto.graph.initializer if t.name == "3.weight_codes")
    assert (
        len(codes.raw_data) == 64 * 32 * 9 // 2 and not codes.int32_data
    )  # raw, two codes a byte: the
    # file's size does not depend on the trained values
    assert onnx_inspect.describe(proto)[0] == (
        "DequantizeLinear  ← INT4 0.weight_codes, FLOAT 0.weight_scale, INT4 0.weight_zero_point"
    )


def test_activation_quantizers_are_quantize_dequantize_pairs_on_the_smallest_unsigned_type():
    model = zoo.build("pikelpn_mobilenet", bits=3).eval()
    rows = onnx_inspect.pattern(onnx_qdq.build(graph.lower(model), (1, 8, 8)))
    assert rows[:3] == [
        ("QuantizeLinear", ["input", "FLOAT", "UINT8"]),  # the 8-bit image: no Clip needed
        ("DequantizeLinear", ["QuantizeLinear", "FLOAT", "UINT8"]),
        ("DequantizeLinear", ["INT16", "FLOAT", "INT16"]),
    ]  # 8-bit stem weights: ±255
    acts = [i for i, (op, _) in enumerate(rows) if op == "QuantizeLinear"]
    assert len(acts) == 8  # the image and the seven clipped ReLUs
    for i in acts[
        1:
    ]:  # 3 bits: Clip at α, then codes 0 … 7 (in UINT8: see onnx_qdq.GraphBuilder.act_quant)
        assert rows[i - 1][0] == "Clip" and rows[i][1] == ["Clip", "FLOAT", "UINT8"]
        assert rows[i + 1] == ("DequantizeLinear", ["QuantizeLinear", "FLOAT", "UINT8"])
    at_4 = onnx_inspect.pattern(
        onnx_qdq.build(graph.lower(zoo.build("pikelpn_mobilenet", bits=4).eval()), (1, 8, 8))
    )
    assert [op for op, _ in at_4].count("Clip") == 0  # UINT4 saturates at 15 = 2^4 − 1: α itself
    assert [feeds[2] for op, feeds in at_4 if op == "QuantizeLinear"] == ["UINT8"] + ["UINT4"] * 7


def test_the_exporters_own_check_refuses_codes_outside_the_declared_range():
    proto = onnx_qdq.build(graph.lower(MNISTCNN(bits=2, image_size=8).eval()), (1, 8, 8))
    bounds = onnx_inspect.metadata(proto, onnx_inspect.CODE_BOUNDS_KEY)
    bounds["0"]["max"] = 1  # declare a narrower range than the codes use
    helper.set_model_props(proto, {onnx_inspect.CODE_BOUNDS_KEY: json.dumps(bounds)})
    with pytest.raises(
        ValueError, match=r"layer '0': stored codes span \[-3, 3\], outside the declared \[-3, 1\]"
    ):
        onnx_inspect.check_stored_codes(proto)
    with pytest.raises(ValueError, match="weight codes reach 9, outside ±3"):
        onnx_qdq.check_codes("w", Weight("uniform", np.array([1, -9]), 2, np.array([0.5])))
    with pytest.raises(ValueError, match="2-bit weight codes must be odd"):
        onnx_qdq.check_codes("w", Weight("uniform", np.array([1, 2]), 2, np.array([0.5])))


@examples(40)
@given(bound=st.integers(1, 2**20))
def test_the_code_type_is_the_smallest_that_holds_the_range(bound):
    onnx_type, _ = onnx_qdq.code_type(bound)
    top = {
        TensorProto.INT4: 7,
        TensorProto.INT8: 127,
        TensorProto.INT16: 2**15 - 1,
        TensorProto.INT32: 2**31 - 1,
    }
    smaller = [t for t in top.values() if t < top[onnx_type]]
    assert bound <= top[onnx_type] and all(bound > t for t in smaller)


class ForeignConv(nn.Conv2d):
    """A conv subclass the exporter has never seen (say a Brevitas QuantConv2d)."""

    def forward(self, x):
        return super().forward(torch.round(x))


def test_a_foreign_conv_subclass_is_refused_by_its_path_not_exported_as_float(digits, tmp_path):
    model = nn.Sequential(nn.Sequential(ForeignConv(1, 4, 3)), nn.Flatten(), nn.Linear(144, 10))
    for format in ("onnx", "qonnx", "packed"):
        with pytest.raises(
            UnsupportedLayerError,
            match=r"layer '0\.0' \(ForeignConv\): a subclass of "
            r"torch\.nn\.modules\.conv\.Conv2d",
        ):
            export(model, tmp_path, format, digits.x_test[:10])
    with pytest.raises(UnsupportedLayerError, match=r"layer '0' \(Linearish\)"):
        graph.lower(nn.Sequential(type("Linearish", (nn.Linear,), {})(3, 2)))
    assert list(tmp_path.iterdir()) == []


def test_a_sequential_with_its_own_forward_is_not_read_as_a_chain():
    class Residual(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)

    with pytest.raises(UnsupportedLayerError, match=r"layer '0' \(.*Residual\)"):
        graph.lower(nn.Sequential(Residual(nn.ReLU())))


def test_a_pike_conv_inside_a_plain_sequential_exports_its_quantized_weights(digits, tmp_path):
    qatcore.configure(seed=0, threads=1)
    model = zoo.build("pikelpn_mobilenet", bits=2, dhq=True)
    chain = nn.Sequential(ActQuant(8, 1.0, False), nn.Sequential(model.stem), nn.Flatten()).eval()
    assert isinstance(chain[1][0], PikeConv2d)
    result = export(chain, tmp_path, "onnx", digits.x_test[:50])
    assert result.parity.ok and result.metadata["onnx"]["weight_code_bounds"] == {
        "1.0": [-255, 255]
    }


class Tanh(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


def test_a_failed_parity_leaves_the_output_folder_as_it_was(digits, tmp_path, monkeypatch):
    # a faulty plug-in lowering (tanh written as relu): what the parity check is there to catch
    monkeypatch.setattr(
        graph, "LOWERINGS", [*graph.LOWERINGS, (Tanh, lambda name, module: Op("relu", name))]
    )
    model = nn.Sequential(nn.Conv2d(1, 3, 3), Tanh(), nn.Flatten(), nn.Linear(108, 10)).eval()
    (tmp_path / "model.onnx").write_bytes(b"the previous export")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for format in ("onnx", "packed"):
        with pytest.raises(
            ParityError, match=f"the {format} export does not match PyTorch.*left as it was"
        ):
            export(model, tmp_path, format, digits.x_test[:50], overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    "techniques",
    [
        {},
        {"quantnorm": True},
        {"quantnorm": True, "double_quant": True, "dhq": True},
        {"bits": None},
        {"bits": 2},
        {"bits": 8, "dhq": True},
    ],
)
def test_the_pikelpn_model_lowers_and_matches_pytorch_in_numpy_and_onnxruntime(techniques, digits):
    qatcore.configure(seed=3, threads=1)
    model = random_batch_norm_statistics(zoo.build("pikelpn_mobilenet", **techniques), seed=4)
    x = digits.x_test[:60]
    expected = model(x).detach().double().numpy()
    assert np.ptp(expected) > 0  # not a constant output: the check can fail
    ops = graph.lower(model)
    kinds = {op.kind for op in ops}
    assert "global_avgpool" in kinds and ("act_quant" in kinds) == (
        techniques.get("bits", 4) is not None
    )
    assert ("affine" in kinds) == bool(techniques.get("quantnorm"))
    step = np.ptp(expected) / 255
    np.testing.assert_allclose(reference.infer(ops, x.numpy()), expected, atol=step)
    out = onnx_run.run(
        onnx_run.session(onnx_qdq.build(ops, (1, 8, 8)).SerializeToString()), x.numpy()
    )
    np.testing.assert_allclose(out, expected, atol=step)
    assert (out.argmax(1) == expected.argmax(1)).all()


def test_per_channel_scales_dequantize_along_the_output_channels():
    qatcore.configure(seed=5, threads=1)
    model = zoo.build("pikelpn_mobilenet", bits=4, dhq=True).eval()
    proto = onnx_qdq.build(graph.lower(model), (1, 8, 8))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    node = next(n for n in proto.graph.node if n.input[0] == "pw1.weight_codes")
    assert helper.get_attribute_value(node.attribute[0]) == 0 and inits[
        "pw1.weight_scale"
    ].shape == (32,)
    levels = inits["pw1.weight_codes"].astype(np.float64) * inits["pw1.weight_scale"].reshape(
        -1, 1, 1, 1
    )
    expected = model.pw1.quantized_weight().detach().double().numpy()
    np.testing.assert_allclose(levels, expected, rtol=1e-6, atol=1e-7)
