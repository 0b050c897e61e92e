"""The 8-bit QDQ variant: onnxruntime's optimized graph runs it with integer kernels (and the INT4
file without), its weights are exact where 8 bits hold them, and its grids have integer zero points."""

import json

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

import qatcore
from qatcore import data
from qatcore.cli import main
from qatcore.estimators.models import MNISTCNN
from qatcore.export import export, graph, onnx_int8, onnx_run
from qatcore.export.ops import Weight


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def cnn(bits: int) -> torch.nn.Module:
    qatcore.configure(seed=3, threads=1)
    return MNISTCNN(bits=bits, image_size=8).eval()


def test_the_int8_file_runs_qlinearconv_and_qgemm_and_the_int4_file_runs_none(digits, tmp_path):
    model, x = cnn(2), digits.x_test[:300]
    int8 = export(model, tmp_path, "onnx", x, digits.y_test[:300], name="m", int8=True)
    int4 = export(model, tmp_path, "onnx", x, digits.y_test[:300], name="m")
    assert int8.path.name == "m.int8.onnx" and int4.path.name == "m.onnx"
    assert int8.metadata["onnx"]["integer_kernels"] == {"QLinearConv": 2, "QGemm": 2}
    assert int4.metadata["onnx"]["integer_kernels"] == {}
    # read the optimized graph again, here, rather than trust the metadata
    optimized = onnx_run.optimized(int8.path)
    assert {n.op_type for n in optimized.graph.node} >= {"QLinearConv", "QGemm"}
    assert "Conv" not in {n.op_type for n in optimized.graph.node}
    assert int8.parity.ok and int8.parity.prediction_agreement >= 0.95
    assert int8.parity.max_abs_diff > 0  # it re-quantizes the activations
    assert int8.metadata["onnx"]["int8_exact_weights"] == {
        "0": True,
        "3": True,
        "7": False,
        "9": False,
    }
    assert json.loads(int8.metadata_path.read_text())["parity"]["required_agreement"] == 0.95


def test_every_zero_point_is_an_8_bit_integer_and_weights_are_int8(digits):
    proto, _ = onnx_int8.build(graph.lower(cnn(4)), (1, 8, 8), digits.x_test[:100].numpy())
    types = {t.name: t.data_type for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) == 3:
            zero_type = types[node.input[2]]
            assert zero_type in (
                onnx.TensorProto.UINT8,
                onnx.TensorProto.INT8,
                onnx.TensorProto.INT32,
            )
            if node.input[0] in types:  # a stored weight or bias
                assert types[node.input[0]] == zero_type


@pytest.mark.parametrize(("bits", "exact"), [(1, True), (4, True), (7, True), (8, False)])
def test_b_bit_codes_are_kept_exactly_up_to_7_bits(bits, exact):
    codes = np.array([[-(2**bits - 1), -1, 1, 2**bits - 1]], np.int32)
    weight = Weight("uniform", codes, bits, np.array([0.01]), 1.0)
    stored, scale, kept = onnx_int8.int8_weight(weight)
    assert kept == exact
    restored = stored.astype(np.float64) * scale.reshape(-1, 1)
    error = np.abs(restored - weight.dequantized()).max()
    assert (error == 0) if exact else (0 < error <= scale.max() / 2 + 1e-12)


@examples(60)
@given(low=st.floats(-50, 50), width=st.floats(1e-3, 100))
def test_the_uint8_grid_covers_the_range_with_an_integer_zero_point(low, width):
    high = low + width
    scale, zero = onnx_int8.uint8_grid(low, high)
    assert isinstance(zero, int) and 0 <= zero <= 255
    assert (0 - zero) * scale <= min(low, 0) + scale and (255 - zero) * scale >= max(
        high, 0
    ) - scale


def test_int8_is_a_variant_of_onnx_only(digits, tmp_path):
    with pytest.raises(ValueError, match="int8"):
        export(cnn(2), tmp_path, "packed", digits.x_test[:10], int8=True)


def test_export_without_qonnx_says_so_in_one_line_exits_2_and_makes_no_folder(
    tmp_path, capsys, monkeypatch
):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "qonnx" else find_spec(name, *a),
    )
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exited:
        main(["export", str(tmp_path / "missing.pt"), "--format", "qonnx", "--out", str(out)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "qonnx" in err and "not installed" in err
    assert not out.exists()


def test_the_cli_writes_the_int8_file_and_refuses_int8_with_another_format(tmp_path, capsys):
    from qatcore import checkpoint

    path = checkpoint.save(
        tmp_path / "c.pt", cnn(2), "mnist_cnn", {"bits": 2, "image_size": 8}, {"dataset": "digits"}
    )
    assert (
        main(
            [
                "export",
                str(path),
                "--format",
                "onnx",
                "--int8",
                "--out",
                str(tmp_path / "d"),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"].endswith("c.int8.onnx") and summary["parity_ok"]
    meta = json.loads((tmp_path / "d" / "c.int8.onnx.json").read_text())
    assert meta["onnx"]["int8"] and meta["onnx"]["integer_kernels"] == {
        "QLinearConv": 2,
        "QGemm": 2,
    }
    with pytest.raises(SystemExit) as exited:
        main(["export", str(path), "--format", "packed", "--int8", "--out", str(tmp_path / "e")])
    assert exited.value.code == 2 and "--int8" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
