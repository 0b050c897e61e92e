"""QONNX: the paper's quantizer is one Quant node; every course model exports to ONNX, QONNX and
pt2 with parity (QONNX checked by qonnx's own executor, before and after its cleanup)."""

import json

import numpy as np
import pytest
import torch
from helpers import random_batch_norm_statistics
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper
from strategies import examples

import qatcore
from qatcore import data, zoo
from qatcore.estimators.models import MNISTCNN
from qatcore.export import export, graph
from qatcore.quantizers import uniform_quantize

pytest.importorskip("qonnx", reason="qonnx is the course extra: pip install -e '.[course]'")
from qonnx.custom_op.general.bipolar_quant import binary_quant
from qonnx.custom_op.general.intquant import int_quant

from qatcore.export import qonnx


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@examples(60)
@given(bits=st.integers(1, 8), m=st.floats(0.05, 4.0), seed=st.integers(0, 2**16))
def test_the_papers_quantizer_is_one_qonnx_quant_node(bits, m, seed):
    w = (
        torch.randn(200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        * 1.5
        * m
    )
    delta = 2 * m / (2**bits - 1)
    quant = int_quant(
        w.numpy(),
        np.float64(delta),
        np.float64((2**bits - 1) / 2),
        np.float64(bits),
        signed=0,
        narrow=0,
        rounding_mode="ROUND",
    )
    np.testing.assert_allclose(quant, uniform_quantize(w, bits, m).numpy(), rtol=0, atol=1e-9 * m)


@examples(60)
@given(bits=st.integers(1, 8), m=st.floats(0.05, 4.0), seed=st.integers(0, 2**16))
def test_with_zero_point_0_the_levels_are_odd_codes_of_b_plus_1_bits(bits, m, seed):
    """The exported form: scale Δ/2, zero point 0, b + 1 bits signed and narrow keeps every level;
    with b bits the outermost levels would be clipped."""
    w = torch.randn(200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * m
    levels = uniform_quantize(w, bits, m).numpy()
    half_step = m / (2**bits - 1)

    def quant(width):
        return int_quant(
            levels, np.float64(half_step), np.float64(0), np.float64(width), 1, 1, "ROUND"
        )

    np.testing.assert_allclose(quant(bits + 1), levels, rtol=0, atol=1e-9 * m)
    if bits >= 2:  # the extra bit is needed: at b bits the outermost levels ±m are clipped
        assert np.abs(quant(bits)).max() < np.abs(levels).max() == pytest.approx(m)


def test_the_bipolar_quant_of_zero_is_plus_one_like_qatcores_sign():
    np.testing.assert_array_equal(
        binary_quant(np.array([-0.5, 0.0, 2.0]), np.float32(1.0)), [-1, 1, 1]
    )


def test_the_qonnx_graph_holds_quant_nodes_with_the_papers_parameters():
    model = MNISTCNN(bits=3, image_size=8).eval()
    proto = qonnx.build(graph.lower(model), (1, 8, 8))
    assert {(o.domain, o.version) for o in proto.opset_import} >= {(qonnx.DOMAIN, 1)}
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    quants = [n for n in proto.graph.node if n.op_type == "Quant"]
    assert [n.domain for n in quants] == [qonnx.DOMAIN] * 4  # two convs, two pools as convs
    weights = [n for n in quants if float(inits[n.input[3]]) == 4]
    assert len(weights) == 2
    for node, layer in zip(weights, (model[0], model[3]), strict=True):
        weight, scale, zero_point, bit_width = (inits[name] for name in node.input)
        # odd codes at Δ/2, one bit more than the quantizer's b, zero point 0
        assert float(scale) == pytest.approx(layer.m / 7) and float(zero_point) == 0
        assert {a.name: a.i if a.type == a.INT else a.s for a in node.attribute} == {
            "signed": 1,
            "narrow": 1,
            "rounding_mode": b"ROUND",
        }
        np.testing.assert_allclose(weight, layer.weight_levels().numpy(), atol=1e-6)
        codes = weight / scale
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
        assert set(np.round(codes).astype(int).ravel()) <= set(range(-7, 8, 2))
        np.testing.assert_allclose(
            int_quant(weight, scale, zero_point, bit_width, 1, 1, "ROUND"), weight, atol=1e-6
        )


SLOW = pytest.mark.slow  # the rest of the sweep runs in the slow tier
COURSE_MODELS = [
    *[
        pytest.param(
            "mnist_cnn",
            {"bits": bits, "image_size": 8},
            "unit",
            id=f"mnist_cnn-{bits}bit",
            marks=() if bits in (1, 2, 8) else SLOW,
        )
        for bits in range(1, 9)
    ],
    pytest.param("bnn_mlp", {"image_size": 8}, "signed", id="bnn_mlp"),
    pytest.param(
        "bnn_mlp",
        {"image_size": 8, "mode": "low_memory"},
        "signed",
        id="bnn_mlp-low_memory",
        marks=SLOW,
    ),
    pytest.param("cnv", {"image_size": 8, "in_channels": 1}, "signed", id="cnv"),
    pytest.param(
        "binarynet",
        {"image_size": 8, "in_channels": 1, "mode": "low_memory"},
        "signed",
        id="binarynet-low_memory",
        marks=SLOW,
    ),
    pytest.param("pikelpn_mobilenet", {}, "unit", id="pikelpn-4bit", marks=SLOW),
    pytest.param(
        "pikelpn_mobilenet",
        {"quantnorm": True, "double_quant": True, "dhq": True},
        "unit",
        id="pikelpn-quantnorm-dq-dhq",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "inputs"), COURSE_MODELS)
def test_every_course_model_exports_to_onnx_qonnx_and_pt2_with_parity(
    name, kwargs, inputs, digits, tmp_path
):
    qatcore.configure(seed=7, threads=1)
    model = random_batch_norm_statistics(zoo.build(name, **kwargs), seed=8)
    x = digits.x_test[:40] * (2 if inputs == "signed" else 1) - (1 if inputs == "signed" else 0)
    for format in ("onnx", "qonnx", "pt2"):
        result = export(model, tmp_path, format, x, name=name)
        assert result.parity.ok, (format, result.parity)
    meta = json.loads((tmp_path / f"{name}.qonnx.onnx.json").read_text())
    assert meta["qonnx"]["parity_after_cleanup"]["ok"]
    types = meta["qonnx"]["node_types"]
    assert ("BipolarQuant" in types) == (name in ("bnn_mlp", "cnv", "binarynet"))
    assert ("Quant" in types) == (name not in ("bnn_mlp", "cnv", "binarynet"))
    assert "QuantizeLinear" not in types and "Sign" not in types


def test_cleanup_and_shape_inference_keep_the_quant_nodes(digits):
    model = random_batch_norm_statistics(zoo.build("pikelpn_mobilenet", bits=3), seed=1)
    proto = qonnx.build(graph.lower(model), (1, 8, 8))
    cleaned = qonnx.cleaned(proto)
    count = sum(n.op_type == "Quant" for n in proto.graph.node)  # 8 activation, 8 weight quantizers
    assert count == 8 + 8 and sum(n.op_type == "Quant" for n in cleaned.graph.node) == count
    x = digits.x_test[:30].numpy()
    np.testing.assert_allclose(qonnx.execute(cleaned, x), qonnx.execute(proto, x), atol=1e-6)
