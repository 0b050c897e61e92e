"""k-bit exports (ONNX Q/DQ, packed, torch.export) of a trained MNIST CNN, checked against PyTorch."""

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from onnx import TensorProto, numpy_helper
from strategies import examples
from torch import nn

import qatcore
from qatcore import checkpoint, data, files
from qatcore.cli import main
from qatcore.estimators.layers import QuantConv2d, quantized_layers
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.train import TrainConfig, train
from qatcore.export import (
    export,
    graph,
    metadata,
    onnx_inspect,
    onnx_qdq,
    onnx_run,
    packed,
    reference,
)
from qatcore.optimizers import OptimizerConfig
from qatcore.quantizers import uniform_quantize

ROOT = Path(qatcore.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """A 2-bit MNIST CNN trained for 3 epochs on digits (≈ 85 % test accuracy)."""
    qatcore.configure(seed=0, threads=1)
    model = MNISTCNN(bits=2, image_size=8)
    result = train(
        model,
        digits,
        TrainConfig(OptimizerConfig("adam", lr=3e-3), batch_size=64, epochs=3),
        progress=False,
    )
    assert result.test_accuracy > 0.6
    return model.eval()


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8])
def test_onnx_weights_are_integer_codes_of_the_smallest_type_with_their_range_in_the_metadata(bits):
    model = MNISTCNN(bits=bits, image_size=8).eval()
    proto = onnx_qdq.build(graph.lower(model), (1, 8, 8))
    types = onnx_inspect.node_types(proto)
    assert types["DequantizeLinear"] == 2 and types["Conv"] == 2 and "Clip" not in types
    bound = 2**bits - 1
    assert onnx_inspect.clip_bounds(proto) == {"0": (-bound, bound), "3": (-bound, bound)}
    expected_type = (
        TensorProto.INT4 if bits <= 3 else TensorProto.INT8 if bits <= 7 else TensorProto.INT16
    )
    inits = {t.name: t for t in proto.graph.initializer}
    for name in ("0", "3"):
        assert inits[f"{name}.weight_codes"].data_type == expected_type
        codes = numpy_helper.to_array(inits[f"{name}.weight_codes"]).astype(np.int64)
        assert name + ".weight" not in inits  # no float copy of the weight
        assert set(np.unique(codes) % 2) == {1}  # odd codes: 2^b levels, none at 0
        assert len(np.unique(codes)) <= 2**bits and np.abs(codes).max() <= bound


def test_onnx_initializers_dequantize_to_the_pytorch_quantized_weights():
    model = MNISTCNN(bits=2, image_size=8).eval()
    proto = onnx_qdq.build(graph.lower(model), (1, 8, 8))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, layer in quantized_layers(model).items():
        weight = inits[f"{name}.weight_codes"].astype(np.float64) * float(
            inits[f"{name}.weight_scale"]
        )
        assert (
            inits[f"{name}.weight_codes"].dtype.itemsize == 1
        )  # INT4 (packed two to a byte in the file)
        np.testing.assert_allclose(
            weight, layer.weight_levels().double().numpy(), rtol=0, atol=1e-6 * layer.m
        )


@examples(60)
@given(bits=st.integers(1, 16), m=st.floats(1e-2, 5.0), seed=st.integers(0, 2**16))
@example(bits=15, m=4.625, seed=1)  # a weight on a threshold: float32 and float64 round apart
def test_odd_codes_times_half_step_are_the_quantizer_levels(bits, m, seed):
    layer = QuantConv2d(2, 3, 3, bits=bits, m=m)
    with torch.no_grad():
        layer.weight.copy_(
            torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(seed)) * 2 * m
        )
    weight = graph.uniform_weight(layer)
    assert np.all(np.abs(weight.values) <= 2**bits - 1) and np.all(weight.values % 2 == 1)
    # the model quantizes its float32 weights: at 15–16 bits a float64 copy may round a weight
    # that sits on a threshold to the neighbouring level, so compare with what the model computes
    expected = uniform_quantize(layer.weight.detach(), bits, m).double().numpy()
    np.testing.assert_allclose(weight.dequantized(), expected, rtol=0, atol=1e-5 * m)


@examples(60)
@given(bits=st.integers(1, 16), codes=st.lists(st.integers(0, 2**16 - 1), min_size=0, max_size=40))
def test_packed_codes_round_trip_at_their_bit_width(bits, codes):
    codes = np.array(codes, np.int64) % 2**bits
    stored = packed.pack_codes(codes, bits)
    assert len(stored) == -(-len(codes) * bits // 8)
    np.testing.assert_array_equal(packed.unpack_codes(stored, bits, len(codes)), codes)


def test_trained_2_bit_cnn_onnx_matches_pytorch_within_one_output_step(trained, digits, tmp_path):
    result = export(trained, tmp_path, "onnx", digits.x_test, digits.y_test, threads=1)
    assert result.parity.max_abs_diff <= result.parity.output_step
    assert result.parity.prediction_agreement == 1.0 and result.parity.examples == len(
        digits.x_test
    )
    assert result.size_bytes == os.path.getsize(tmp_path / "model.onnx") < result.float_size_bytes
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["weight_bits"] == {"0": 2, "3": 2, "7": 32, "9": 32}
    assert meta["accuracy"]["export"] == meta["accuracy"]["pytorch"] > 0.6
    assert meta["parity"]["ok"] and meta["onnx"]["weight_code_bounds"] == {
        "0": [-3, 3],
        "3": [-3, 3],
    }
    assert (
        meta["size_bytes"] == result.size_bytes
        and meta["float_size_bytes"] == result.float_size_bytes
    )
    try:
        import qatcore.cost.ace  # noqa: F401  (ACEv2 appears once that module exists)
    except ImportError:
        assert meta["ace"] is None
    else:
        assert meta["ace"]["totals"]["acev2"] > 0
    onnx.checker.check_model(str(tmp_path / "model.onnx"), full_check=True)


def test_packed_k_bit_export_runs_in_numpy_and_stores_2_bits_per_weight(trained, digits, tmp_path):
    result = export(trained, tmp_path, "packed", digits.x_test, digits.y_test)
    assert result.parity.ok
    with np.load(tmp_path / "model.npz", allow_pickle=False) as stored:
        assert (
            stored["0.weight"].nbytes == 32 * 9 * 2 // 8
            and stored["3.weight"].nbytes == 64 * 32 * 9 * 2 // 8
        )
    ops, _ = packed.load(tmp_path / "model.npz")
    np.testing.assert_allclose(
        reference.infer(ops, digits.x_test[:5].numpy()),
        trained(digits.x_test[:5]).detach().numpy(),
        atol=1e-4,
    )


def test_pt2_reloads_with_a_free_batch_size(trained, digits, tmp_path):
    result = export(trained, tmp_path, "pt2", digits.x_test, digits.y_test)
    assert result.parity.max_abs_diff == 0.0 and result.parity.ok
    module = torch.export.load(str(tmp_path / "model.pt2")).module()
    with zipfile.ZipFile(tmp_path / "model.pt2") as archive:  # no file paths of this machine inside
        assert not any(str(ROOT).encode() in archive.read(entry) for entry in archive.namelist())
    for batch in (1, 3):
        torch.testing.assert_close(
            module(digits.x_test[:batch]), trained(digits.x_test[:batch]), rtol=0, atol=0
        )


def test_a_pt2_file_and_a_checkpoint_do_not_carry_the_temporary_name_they_were_written_under(
    trained, digits, tmp_path
):
    """Exports and checkpoints are written to a temporary name first; torch names an archive's inner
    folder after the file it writes, so that name (with a process id) would change the file's bytes."""
    sizes = []
    for name in ("a", "a_much_longer_name"):
        result = export(trained, tmp_path / name, "pt2", digits.x_test, digits.y_test, name=name)
        with zipfile.ZipFile(result.path) as archive:
            assert {entry.split("/")[0] for entry in archive.namelist()} == {"archive"}
        sizes.append(result.size_bytes)
    assert sizes[0] == sizes[1]
    saved = checkpoint.save(tmp_path / "c.pt", trained, "mnist_cnn", {"bits": 2, "image_size": 8})
    with zipfile.ZipFile(saved) as archive:
        assert {entry.split("/")[0] for entry in archive.namelist()} == {"archive"}


def test_a_layer_no_exporter_can_express_is_named(digits, tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(graph.UnsupportedLayerError, match=r"layer '1' \(GELU\)"):
        export(model, tmp_path, "onnx", digits.x_test)
    with pytest.raises(
        graph.UnsupportedLayerError, match=r"'0' \(Conv2d\): padding_mode='reflect'"
    ):
        graph.lower(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")))
    assert list(tmp_path.iterdir()) == []
    # torch.export takes any traceable model: the same model exports to .pt2
    assert export(model, tmp_path, "pt2", digits.x_test[:20]).parity.ok


def test_an_existing_export_is_refused_unless_overwritten(trained, digits, tmp_path):
    x = digits.x_test[:50]
    export(trained, tmp_path, "onnx", x)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match="model.onnx' already exists"):
        export(trained, tmp_path, "onnx", x)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    export(trained, tmp_path, "onnx", x, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    def explode(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(tmp_path / "model.onnx", explode)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_named(trained, digits, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out must be a folder"):
        export(trained, tmp_path / "file", "onnx", digits.x_test)
    with pytest.raises(
        ValueError,
        match=r"format must be one of \('onnx', 'qonnx', 'packed', 'pt2'\), got 'tflite'",
    ):
        export(trained, tmp_path, "tflite", digits.x_test)
    with pytest.raises(ValueError, match="x must be a non-empty float32 tensor"):
        export(trained, tmp_path, "onnx", digits.x_test.double())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        graph.lower("model")


def test_parity_counts_the_largest_difference_and_the_agreeing_predictions():
    ref = np.array([[0.0, 2.55], [1.0, 0.0]])
    result = metadata.parity(ref, ref + [[0.0, 0.02], [0.0, 2.0]])
    assert result.max_abs_diff == pytest.approx(2.0) and result.output_step == pytest.approx(0.01)
    assert result.prediction_agreement == 0.5 and not result.ok
    assert metadata.parity(ref, ref + 0.005).ok


def test_cli_exports_a_checkpoint_and_prints_the_parity_json(trained, tmp_path, capsys):
    path = checkpoint.save(
        tmp_path / "cnn.pt",
        trained,
        "mnist_cnn",
        {"bits": 2, "image_size": 8},
        {"dataset": "digits"},
    )
    assert (
        main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "out"), "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert {"max_abs_diff", "prediction_agreement", "size_bytes", "float_size_bytes"} <= set(
        summary
    )
    assert (
        summary["prediction_agreement"] == 1.0
        and summary["size_bytes"] < summary["float_size_bytes"]
    )
    assert json.loads((tmp_path / "out" / "cnn.onnx.json").read_text())["model"] == "mnist_cnn"
    with pytest.raises(SystemExit) as stop:
        main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "pool",
    [
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool2d(2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.MaxPool2d(2),
    ],
)
def test_pooling_geometry_matches_pytorch_in_numpy_and_onnx(pool):
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2),
        pool,
        nn.Hardtanh(-0.3, 0.4),
        nn.BatchNorm2d(3).eval(),
        nn.Flatten(),
    ).eval()
    x = torch.randn(4, 2, 11, 11, generator=torch.Generator().manual_seed(0))
    expected = model(x).detach().numpy()
    ops = graph.lower(model)
    np.testing.assert_allclose(reference.infer(ops, x.numpy()), expected, atol=1e-5)
    session = onnx_run.session(onnx_qdq.build(ops, (2, 11, 11)).SerializeToString())
    np.testing.assert_allclose(onnx_run.run(session, x.numpy()), expected, atol=1e-5)


def test_the_size_figure_has_a_latency_panel_only_when_given_latencies():
    from qatcore.export.plots import plot_export_sizes

    sizes = {"a": (100, 3200), "b": (400, 800)}
    fig = plot_export_sizes(sizes)
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].texts] == ["32.0×", "2.0×"]
    fig = plot_export_sizes(
        sizes, {"1": {"eager": 2.0, "onnxruntime": 0.5}, "256": {"eager": 9.0, "onnxruntime": 3.0}}
    )
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 4
