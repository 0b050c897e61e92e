"""Exports and checkpoints under faults: a failed overwrite keeps the previous pair, temporaries
never outlive their writer, modes follow the umask, and malformed checkpoints are one line, exit 2."""

import os
import stat

import numpy as np
import pytest
import torch
from helpers import run_cli
from idx_writer import filename, write_idx

from qatcore import checkpoint, files, zoo


def _one_line(err):
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    kwargs = {"image_size": 8, "num_classes": 10, "bits": 4}
    model = zoo.build("mnist_cnn", **kwargs)
    path = checkpoint.save(tmp_path / "c.pt", model, "mnist_cnn", kwargs, {"dataset": "digits"})
    return path, model, kwargs


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_failed_overwrite_keeps_the_previous_export_and_its_metadata(tmp_path, saved, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "export", str(saved[0]), "--format", "onnx", "--out", str(out))
    assert code == 0, err
    before = _contents(out)
    assert sorted(before) == ["c.onnx", "c.onnx.json"]
    (out / "c.onnx.json").unlink()
    (out / "c.onnx.json").mkdir()  # a folder where the metadata goes
    code, _, err = run_cli(
        capsys, "export", str(saved[0]), "--format", "onnx", "--out", str(out), "--overwrite"
    )
    assert code == 2 and _one_line(err) and "is a folder" in err
    assert (out / "c.onnx").read_bytes() == before["c.onnx"]
    assert _listing(out) == ["c.onnx", "c.onnx.json"]  # no temporaries


def _write_pair(folder, first=b"new file", second=b"new meta", fail=None):
    def writer(data, name):
        def write(tmp):
            tmp.write_bytes(data)
            if fail == name:
                raise OSError(28, "No space left on device")

        return write

    return files.atomic_write_group(
        [(folder / "a.onnx", writer(first, "a")), (folder / "a.onnx.json", writer(second, "b"))],
        overwrite=True,
    )


@pytest.mark.parametrize("fail", ["a", "b"])
def test_a_failure_between_the_two_writes_keeps_the_old_pair_and_leaves_no_temporaries(
    tmp_path, fail
):
    _write_pair(tmp_path, b"old file", b"old meta")
    with pytest.raises(OSError, match="No space"):
        _write_pair(tmp_path, fail=fail)
    assert _contents(tmp_path) == {"a.onnx": b"old file", "a.onnx.json": b"old meta"}


def test_a_failure_during_the_swap_puts_the_old_pair_back(tmp_path, monkeypatch):
    _write_pair(tmp_path, b"old file", b"old meta")
    real, calls = os.replace, []

    def failing(source, target):
        calls.append(target)
        if str(target).endswith("a.onnx.json") and not str(source).endswith(".old.json"):
            raise OSError(5, "Input/output error")
        return real(source, target)

    monkeypatch.setattr(files.os, "replace", failing)
    with pytest.raises(OSError, match="Input/output"):
        _write_pair(tmp_path)
    monkeypatch.undo()
    assert calls  # the fault was reached
    assert _contents(tmp_path) == {"a.onnx": b"old file", "a.onnx.json": b"old meta"}


def _dead_pid() -> int:
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            return dead
        except PermissionError:
            dead += 1


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".a.onnx.{dead}.x1.tmp.onnx").write_bytes(b"")
    (tmp_path / f".a.onnx.{dead}.x2.old.onnx").write_bytes(b"half")
    alive = tmp_path / f".a.onnx.{os.getpid()}.x3.tmp.onnx"  # a live writer's: kept
    alive.write_bytes(b"")
    _write_pair(tmp_path)
    assert _listing(tmp_path) == sorted(["a.onnx", "a.onnx.json", alive.name])


def test_an_old_file_a_killed_writer_set_aside_is_put_back(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".a.onnx.json.{dead}.x1.old.json").write_bytes(b"old meta")  # killed mid-swap
    (tmp_path / "a.onnx").write_bytes(b"new file")
    assert files.remove_stale_temporaries(tmp_path / "a.onnx.json")
    assert _contents(tmp_path) == {"a.onnx": b"new file", "a.onnx.json": b"old meta"}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, mask, saved):
    old = os.umask(mask)
    try:
        _write_pair(tmp_path)
        path = checkpoint.save(tmp_path / "d.pt", saved[1], "mnist_cnn", saved[2])
    finally:
        os.umask(old)
    for name in ("a.onnx", "a.onnx.json", path.name):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def _bad_checkpoint(tmp_path, change):
    kwargs = {"image_size": 8, "num_classes": 10, "bits": 4}
    model = zoo.build("mnist_cnn", **kwargs)
    payload = {
        "format": checkpoint.FORMAT,
        "model": "mnist_cnn",
        "kwargs": dict(kwargs),
        "info": {},
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
    }
    change(payload)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    return path


def _first_tensor(p):
    return next(iter(p["state_dict"]))


BAD_CHECKPOINTS = {
    "model missing": lambda p: p.pop("model"),
    "model unknown": lambda p: p.update(model="nope"),
    "model an int": lambda p: p.update(model=5),
    "kwargs a list": lambda p: p.update(kwargs=[1, 2]),
    "kwargs unknown name": lambda p: p["kwargs"].update(colour="red"),
    "kwargs wrong type": lambda p: p["kwargs"].update(image_size="eight"),
    "kwargs bits 99": lambda p: p["kwargs"].update(bits=99),
    "image_size 700 in a small checkpoint": lambda p: p["kwargs"].update(image_size=700),
    "num_classes 2e6": lambda p: p["kwargs"].update(num_classes=2_000_000),
    "state_dict missing": lambda p: p.pop("state_dict"),
    "state_dict a list": lambda p: p.update(state_dict=[1]),
    "state_dict holds a number": lambda p: p["state_dict"].update({_first_tensor(p): 3}),
    "tensor missing": lambda p: p["state_dict"].pop(_first_tensor(p)),
    "tensor extra": lambda p: p["state_dict"].update(extra=torch.zeros(1)),
    "tensor wrong shape": lambda p: p["state_dict"].update({_first_tensor(p): torch.zeros(3)}),
    "info a string": lambda p: p.update(info="x"),
    "info holds a tensor": lambda p: p.update(info={"t": torch.zeros(1)}),
    "format wrong": lambda p: p.update(format="qatcore-checkpoint-0"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_a_malformed_checkpoint_is_one_line_exit_2(tmp_path, capsys, case):
    path = _bad_checkpoint(tmp_path, BAD_CHECKPOINTS[case])
    code, _, err = run_cli(
        capsys, "export", str(path), "--format", "onnx", "--out", str(tmp_path / "o")
    )
    assert code == 2, (case, err)
    assert _one_line(err), (case, err)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint", b"PK\x03\x04truncated zip", b"\x80\x02}q\x00."]
)
def test_a_file_that_is_no_checkpoint_is_one_line_exit_2(tmp_path, capsys, content):
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    code, _, err = run_cli(
        capsys, "export", str(path), "--format", "onnx", "--out", str(tmp_path / "o")
    )
    assert code == 2 and _one_line(err), err


def test_a_folder_for_the_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "export", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "o")
    )
    assert code == 2 and _one_line(err), err


def _idx_folder(folder, size):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / filename(f"{split}-images-idx3-ubyte", "plain"), images)
        write_idx(folder / filename(f"{split}-labels-idx1-ubyte", "plain"), labels)
    return folder


def test_export_refuses_data_of_another_image_size_than_the_checkpoints(tmp_path, saved, capsys):
    data = _idx_folder(tmp_path / "nine", 9)
    code, _, err = run_cli(
        capsys,
        "export",
        str(saved[0]),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "o"),
        "--dataset",
        "mnist",
        "--data-dir",
        str(data),
    )
    assert code == 2 and _one_line(err), err
    assert "(1, 8, 8)" in err and "(1, 9, 9)" in err
