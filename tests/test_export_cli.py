"""The command-line path from training to a deployable file: `qatcore train`, then `qatcore export`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import qatcore
from qatcore import checkpoint
from qatcore.cli import main

ROOT = Path(qatcore.__file__).resolve().parent.parent


def _qatcore(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QATCORE_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "qatcore", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_fresh_checkout_trains_then_exports_int4_qdq_onnx_with_full_agreement(tmp_path):
    trained = _qatcore(
        "train",
        "--model",
        "mnist_cnn",
        "--bits",
        "2",
        "--epochs",
        "1",
        "--out",
        "c.pt",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    exported = _qatcore("export", "c.pt", "--format", "onnx", "--out", "d", "--json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    assert summary["prediction_agreement"] == 1.0 and summary["parity_ok"]
    model = onnx.load(str(tmp_path / "d" / "c.onnx"))
    int4 = {t.name for t in model.graph.initializer if t.data_type == TensorProto.INT4}
    fed = [
        node
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in int4
    ]
    assert len(fed) == 2  # both 2-bit convs: INT4 codes straight into DequantizeLinear
    consumers = {
        node.op_type
        for node in model.graph.node
        for i in node.input
        if i in {n.output[0] for n in fed}
    }
    assert consumers == {"Conv"}


def test_train_writes_a_checkpoint_the_exporter_reads_for_a_bnn(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--model",
                "bnn_mlp",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "b.pt"),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    saved = checkpoint.load(tmp_path / "b.pt")
    assert (
        saved.name == "bnn_mlp"
        and saved.info["inputs"] == "signed"
        and summary["model"] == "bnn_mlp"
    )
    assert (
        main(
            [
                "export",
                str(tmp_path / "b.pt"),
                "--format",
                "packed",
                "--out",
                str(tmp_path / "d"),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["prediction_agreement"] == 1.0
    pytest.importorskip("qonnx")
    assert (
        main(
            [
                "export",
                str(tmp_path / "b.pt"),
                "--format",
                "qonnx",
                "--out",
                str(tmp_path / "d"),
                "--json",
            ]
        )
        == 0
    )
    meta = json.loads((tmp_path / "d" / "b.qonnx.onnx.json").read_text())
    assert meta["parity"]["ok"] and meta["qonnx"]["parity_after_cleanup"]["ok"]
    assert (
        meta["qonnx"]["node_types"]["BipolarQuant"] == 4 + 5
    )  # four sign activations, five binary weights


def test_train_names_its_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "train",
                "--model",
                "bnn_mlp",
                "--bits",
                "2",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
    assert (
        stop.value.code == 2
        and "bits applies only to ('mnist_cnn', 'pikelpn_mobilenet')" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model", "mnist_cnn", "--epochs", "0", "--out", str(tmp_path / "x.pt")])
    assert stop.value.code == 2 and "epochs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the fast tier exports an untrained PikeLPN in every format (test_export_interop)
def test_a_trained_pikelpn_checkpoint_exports_in_every_format(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--model",
                "pikelpn_mobilenet",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "p.pt"),
            ]
        )
        == 0
    )
    formats = ["onnx", "packed", "pt2"] + (["qonnx"] if _has_qonnx() else [])
    for format in formats:
        assert (
            main(
                [
                    "export",
                    str(tmp_path / "p.pt"),
                    "--format",
                    format,
                    "--out",
                    str(tmp_path / "d"),
                    "--json",
                ]
            )
            == 0
        )
        lines = capsys.readouterr().out.strip().splitlines()
        assert json.loads(lines[-1])["prediction_agreement"] == 1.0, format
    codes = numpy_helper.to_array(
        next(
            t
            for t in onnx.load(str(tmp_path / "d" / "p.onnx")).graph.initializer
            if t.name == "pw1.weight_codes"
        )
    )
    assert np.abs(codes.astype(np.int64)).max() <= 15  # 4-bit codes


def _has_qonnx() -> bool:
    try:
        import qonnx  # noqa: F401
    except ImportError:
        return False
    return True
