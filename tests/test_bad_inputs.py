"""Malformed input across the CLI, configs and data: each is one line on stderr, no traceback, exit 2
(or refused with a ValueError/TypeError naming the argument), before any work or allocation starts."""

import gzip
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from helpers import run_cli
from idx_writer import encode_idx, filename, write_idx

from qatcore import checks
from qatcore.data import idx, image_folder


def _assert_one_line(code, err, expected_code=2, contains=""):
    assert code == expected_code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert contains in err, err


# --- configs: the wrong types, devices and counts -------------------------------------------------

BAD_CONFIGS = {
    "optimizer = 5": "optimizer must be a name",
    "optimizer = [1, 2]": "optimizer must be a name",
    "optimizer = true": "optimizer must be a name",
    "data_dir = 5": "data_dir must be a non-empty string",
    'data_dir = ""': "data_dir must be a non-empty string",
    'device = "foo"': "device must be a torch device name",
    "device = 3": "device must be a torch device name",
    'device = "cuda:x"': "device must be a torch device name",
    "seeds = 0": "seeds must be an int >= 1",
    "seeds = -3": "seeds must be an int >= 1",
    'seeds = "two"': "seeds",
    "bits = 2.5": "bits must be an int",
    "bits = 0": "bits",
    'epochs = "ten"': "epochs",
    "batch_size = 0": "batch_size",
    "seed = -1": "seed",
    "estimator = 3": "estimator",
    'estimator = "nope"': "estimator",
    'dataset = "imagenet"': "dataset",
    "unknown = 1": "unknown setting",
    "lr = 0.1": "unknown setting",
    "this is not toml": "",
}


@pytest.mark.parametrize("line", sorted(BAD_CONFIGS))
def test_a_config_value_of_the_wrong_type_is_one_line(tmp_path, capsys, line):
    config = tmp_path / "c.toml"
    config.write_text(line + "\n")
    code, _, err = run_cli(capsys, "equivalence", "--config", str(config))
    _assert_one_line(code, err, contains=BAD_CONFIGS[line])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_a_gpu_device_without_cuda_is_one_line(tmp_path, capsys, device):
    code, _, err = run_cli(capsys, "equivalence", "--device", device, "--epochs", "1")
    _assert_one_line(code, err, contains="torch sees no GPU")


def test_check_device_accepts_the_devices_there_are():
    assert checks.check_device("device", "cpu") == "cpu"
    assert checks.check_device("device", "auto", allow_auto=True) == "auto"
    with pytest.raises(ValueError, match="device must be"):
        checks.check_device("device", "auto")


def test_a_folder_as_the_config_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "equivalence", "--config", str(tmp_path))
    _assert_one_line(code, err, contains=str(tmp_path))


def test_a_missing_config_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "equivalence", "--config", str(tmp_path / "none.toml"))
    _assert_one_line(code, err)


BAD_ARGUMENTS = [
    (["equivalence", "--seeds", "0"], "seeds must be an int >= 1"),
    (["equivalence", "--seeds", "-1"], "seeds must be an int >= 1"),
    (["equivalence", "--workers", "0"], "workers must be an int >= 1"),
    (["equivalence", "--nproc", "0"], "nproc must be an int >= 1"),
    (["equivalence", "--nproc", "-2"], "nproc must be an int >= 1"),
    (["equivalence", "--bits", "0"], "bits"),
    (["equivalence", "--epochs", "0"], "epochs"),
    (["equivalence", "--batch-size", "0"], "batch_size"),
    (["equivalence", "--device", "gpu"], "device must be a torch device name"),
    (["bnn-train", "--nproc", "0"], "nproc must be an int >= 1"),
    (["bnn-train", "--model", "resnete18"], "cannot take the digits images, 8×8"),
    (["reproduce", "--timeout", "-5"], "timeout must be an int >= 1"),
    (["train", "--model", "mnist_cnn", "--out", "x.pt", "--data-dir", "d"], "data_dir"),
    (["equivalence", "--dataset", "mnist", "--data-dir", "/nonexistent/folder"], "/nonexistent"),
]


@pytest.mark.parametrize(
    "argv,expected", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS]
)
def test_a_bad_count_or_option_is_one_line(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    _assert_one_line(code, err, contains=expected)


def test_seeds_zero_in_a_config_is_not_taken_for_one(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("seeds = 3\n")
    code, _, err = run_cli(capsys, "equivalence", "--config", str(config), "--seeds", "0")
    _assert_one_line(code, err, contains="seeds must be an int >= 1, got 0")


def test_train_onto_a_folder_is_one_line_and_keeps_the_folder(tmp_path, capsys):
    (tmp_path / "out.pt").mkdir()
    (tmp_path / "out.pt" / "kept").write_text("x")
    code, _, err = run_cli(
        capsys,
        "train",
        "--model",
        "mnist_cnn",
        "--out",
        str(tmp_path / "out.pt"),
        "--epochs",
        "1",
        "--overwrite",
    )
    _assert_one_line(code, err, contains="is a folder")
    assert (tmp_path / "out.pt" / "kept").read_text() == "x"


# --- IDX files: what they claim against what they hold --------------------------------------------


def _idx_folder(folder, train_labels=None, test_size=8, gz=False):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    labels = (np.arange(20) % 10).astype(np.uint8) if train_labels is None else train_labels
    write_idx(
        folder / filename("train-images-idx3-ubyte", "gz" if gz else "plain"),
        rng.integers(0, 256, (len(labels), 8, 8), dtype=np.uint8),
        gz=gz,
    )
    write_idx(folder / filename("train-labels-idx1-ubyte", "plain"), labels)
    write_idx(
        folder / filename("t10k-images-idx3-ubyte", "plain"),
        rng.integers(0, 256, (5, test_size, test_size), dtype=np.uint8),
    )
    write_idx(folder / filename("t10k-labels-idx1-ubyte", "plain"), np.arange(5, dtype=np.uint8))
    return folder


@pytest.mark.parametrize("label", [2_000_000, 100_001, 2**31 - 1, 300])
def test_a_huge_label_does_not_set_the_class_count(tmp_path, label):
    labels = (np.arange(20) % 10).astype(np.int32)
    labels[3] = label
    folder = _idx_folder(tmp_path / "d", train_labels=labels)
    tracemalloc.start()
    with pytest.raises(ValueError, match=f"imply {label + 1} classes"):
        idx.load_idx_folder(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 2**20


def test_a_wide_label_within_the_labels_count_is_taken(tmp_path):
    labels = (np.arange(300) % 290).astype(np.int32)
    folder = tmp_path / "d"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((300, 8, 8), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte", labels)
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((5, 8, 8), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
    assert idx.load_idx_folder(folder).num_classes == 290


def _bomb(header: bytes, zeros: int) -> bytes:
    stream = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [stream.compress(header)]
    for _ in range(zeros >> 20):
        parts.append(stream.compress(chunk))
    return b"".join(parts) + stream.flush()


@pytest.mark.parametrize(
    "header,zeros,expected",
    [
        (encode_idx(np.zeros((10, 28, 28), np.uint8))[:16], 64 << 20, "trailing bytes"),
        (
            bytes([0, 0, 8, 3]) + np.array([2**31, 2**31, 2**31], ">u4").tobytes(),
            64 << 20,
            "more than the",
        ),
        (bytes([0, 0, 8, 1]) + np.array([2**30 + 1], ">u4").tobytes(), 8 << 20, "more than the"),
        (bytes([0, 0, 0x77, 1]) + np.array([4], ">u4").tobytes(), 64 << 20, "unknown type code"),
        (bytes([1, 2, 8, 1]) + np.array([4], ">u4").tobytes(), 64 << 20, "magic number"),
    ],
    ids=["claims-small", "claims-2^93", "claims-1GiB", "bad-type", "bad-magic"],
)
def test_a_gzip_bomb_is_refused_before_it_inflates(tmp_path, header, zeros, expected):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(_bomb(header, zeros))
    assert path.stat().st_size < zeros // 100
    tracemalloc.start()
    with pytest.raises(idx.IDXFormatError, match=expected):
        idx.read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 24 * 2**20, peak  # the compressed file and one piece, not the inflated stream


@pytest.mark.parametrize(
    "damage,expected",
    [
        (lambda raw: raw[:-8], "corrupt gzip"),
        (lambda raw: raw[:12], "corrupt gzip|truncated|shorter"),
        (lambda raw: raw[:-8] + b"\x00" * 8, "corrupt gzip"),
        (lambda raw: raw + b"junk", "corrupt gzip|trailing"),
    ],
    ids=["no-trailer", "cut-short", "bad-crc", "junk-after"],
)
def test_a_damaged_gzip_is_one_clear_error(tmp_path, damage, expected):
    raw = gzip.compress(encode_idx(np.zeros((4, 8, 8), np.uint8)))
    path = tmp_path / "x.gz"
    path.write_bytes(damage(raw))
    with pytest.raises(idx.IDXFormatError, match=expected):
        idx.read_idx(path)


def test_an_intact_gzip_still_reads(tmp_path):
    array = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    path = write_idx(tmp_path / "x.gz", array, gz=True)
    assert (idx.read_idx(path) == array).all()


def test_train_and_test_images_of_other_sizes_are_one_line(tmp_path, capsys):
    folder = _idx_folder(tmp_path / "d", test_size=9)
    code, _, err = run_cli(capsys, "equivalence", "--dataset", "mnist", "--data-dir", str(folder))
    _assert_one_line(code, err)


def test_a_folder_where_an_idx_file_goes_is_one_line(tmp_path, capsys):
    folder = _idx_folder(tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    (folder / "t10k-labels-idx1-ubyte").mkdir()
    code, _, err = run_cli(capsys, "equivalence", "--dataset", "mnist", "--data-dir", str(folder))
    _assert_one_line(code, err)


# --- image folders -------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path):
    return image_folder.write_synthetic_folder(
        tmp_path / "im", classes=2, train_per_class=2, val_per_class=1, size=(12, 10)
    )


def test_an_empty_class_folder_is_refused(images):
    (images / "train" / "zzz").mkdir()
    (images / "val" / "zzz").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\).*hold no images.*zzz"):
        image_folder.ImageFolder(images, "train", image_size=8)


def test_a_class_folder_of_non_images_is_refused(images):
    (images / "val" / "zzz").mkdir()
    (images / "train" / "zzz").mkdir()
    (images / "train" / "zzz" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="zzz"):
        image_folder.ImageFolder(images, "train", image_size=8)


@pytest.mark.parametrize("content", [b"this is text", b"", b"\xff\xd8\xff\xe0truncated jpeg"])
def test_a_file_named_jpeg_that_is_no_image_is_one_clear_error(images, content):
    cls = sorted(p for p in (images / "train").iterdir())[0]
    bad = sorted(cls.iterdir())[0]
    bad.write_bytes(content)
    data = image_folder.ImageFolder(images, "train", image_size=8)
    index = next(i for i, (path, _) in enumerate(data.samples) if path == bad)
    with pytest.raises(ValueError, match="is not an image Pillow can read"):
        data[index]


def test_a_folder_named_jpeg_is_one_clear_error(images):
    cls = sorted(p for p in (images / "train").iterdir())[0]
    (cls / "folder.JPEG").mkdir()
    data = image_folder.ImageFolder(images, "train", image_size=8)
    index = next(i for i, (path, _) in enumerate(data.samples) if path.name == "folder.JPEG")
    with pytest.raises(ValueError, match="is not an image"):
        data[index]


def test_a_worker_s_error_reaches_the_cli_as_its_last_line():
    from qatcore.cli import _one_line

    wrapped = ValueError(
        "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
        "last):\n  File \"x.py\", line 1, in f\nValueError: '/d/a.JPEG' is not an image"
    )
    assert _one_line(wrapped) == "ValueError: '/d/a.JPEG' is not an image"


# --- ImageNet run checkpoints --------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"garbage",
        b"PK\x03\x04",
        {"a": 1},
        {"fingerprint": "x"},
        [1, 2],
        {"fingerprint": "x", "finished": True, "losses": [], "weights": torch.zeros(1)},
    ],
    ids=[
        "empty",
        "garbage",
        "truncated-zip",
        "foreign-dict",
        "only-fingerprint",
        "a-list",
        "finished-without-logits",
    ],
)
def test_a_foreign_or_truncated_run_checkpoint_is_one_clear_error(tmp_path, payload):
    from qatcore.estimators import imagenet

    config = imagenet.ImageNetConfig(
        data_dir=str(tmp_path), out=str(tmp_path / "out"), device="cpu"
    )
    path = imagenet._checkpoint_path(config, "custom")
    path.parent.mkdir(parents=True)
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match="checkpoint") as caught:
        imagenet._resume(config, "custom")
    assert "\n" not in str(caught.value) and "KeyError" not in str(caught.value)


@pytest.mark.parametrize(
    "override,expected",
    [
        ({"device": "foo"}, "device"),
        ({"data_dir": 5}, "data_dir"),
        ({"out": 5}, "out"),
        ({"workers": -1}, "workers"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_imagenet_config_values_of_the_wrong_type_are_refused(tmp_path, override, expected):
    from qatcore.estimators import imagenet

    values = {"data_dir": str(tmp_path), "device": "cpu", **override}
    with pytest.raises((ValueError, TypeError), match=expected):
        imagenet.ImageNetConfig(**values)


@pytest.mark.parametrize(
    "error,code,expected",
    [
        (OSError(28, "No space left on device", "/full/x.onnx"), 1, "failed: No space left"),
        (OSError(5, "Input/output error"), 1, "failed: Input/output error"),
        (PermissionError(13, "Permission denied", "/ro/out"), 2, "error: Permission denied"),
        (IsADirectoryError(21, "Is a directory", "/d"), 2, "error: Is a directory"),
        (NotADirectoryError(20, "Not a directory", "/f/x"), 2, "error: Not a directory"),
        (TypeError("model must be an nn.Module, got int"), 2, "error: model must be"),
    ],
    ids=["full-disk", "io-error", "permission", "is-a-directory", "not-a-directory", "type-error"],
)
def test_os_errors_of_a_run_are_one_line(capsys, monkeypatch, error, code, expected):
    from qatcore import cli

    def fails(args):
        raise error

    summary, arguments, _, parents = cli.SUBCOMMANDS["ace"]
    monkeypatch.setitem(cli.SUBCOMMANDS, "ace", (summary, arguments, fails, parents))
    got, _, err = run_cli(capsys, "ace", "--model", "mnist_cnn")
    _assert_one_line(got, err, expected_code=code, contains=expected)


MEMORY_SCRIPT = """
import resource, sys, zlib
import numpy as np, torch
from qatcore import checkpoint, zoo
from qatcore.data import idx
folder = sys.argv[1]
kw = {"image_size": 8, "num_classes": 10, "bits": 4}
state = zoo.build("mnist_cnn", **kw).state_dict()
for change in ({"image_size": 700}, {"num_classes": 2_000_000}):
    torch.save({"format": checkpoint.FORMAT, "model": "mnist_cnn", "kwargs": {**kw, **change},
                "info": {}, "state_dict": state}, folder + "/c.pt")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        checkpoint.load(folder + "/c.pt")
    except ValueError:
        pass
    else:
        raise SystemExit("accepted " + str(change))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow  # a fresh interpreter importing torch: about 15 s
def test_small_malformed_checkpoints_take_no_memory_to_refuse(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    grown = [int(line) for line in done.stdout.split()]
    assert len(grown) == 2 and max(grown) < 50, grown  # MB above the interpreter's peak so far
