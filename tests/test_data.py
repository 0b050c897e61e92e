"""qatcore.data on real data: sklearn's digits, IDX files written here, and Debian's Fashion-MNIST."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from idx_writer import TYPE_CODES, encode_idx, filename, write_idx

from qatcore import data
from qatcore.data import IDXFormatError

RNG = np.random.default_rng(0)
SMALL = {
    ("train", "images"): RNG.integers(0, 256, size=(7, 5, 4), dtype=np.uint8),
    ("train", "labels"): np.array([0, 3, 1, 9, 2, 3, 0], dtype=np.uint8),
    ("test", "images"): RNG.integers(0, 256, size=(3, 5, 4), dtype=np.uint8),
    ("test", "labels"): np.array([4, 0, 7], dtype=np.uint8),
}


def write_folder(folder: Path, variant: str = "plain", arrays=SMALL) -> Path:
    """A folder with the four standard IDX files of `arrays`, named in the given variant."""
    folder.mkdir(exist_ok=True)
    for key, stem in data.IDX_FILES.items():
        write_idx(folder / filename(stem, variant), arrays[key], gz=variant.endswith("gz"))
    return folder


# --- digits -------------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_range():
    ds = data.load_digits()
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    for x in (ds.x_train, ds.x_test):
        assert x.min() == 0 and x.max() == 1
    assert ds.num_classes == 10 and ds.image_size == 8
    assert set(ds.y_test.tolist()) == set(range(10))
    assert ds.describe() == "digits: 1347 train / 450 test images of 8×8, 10 classes"
    assert ds.describe() in repr(ds)


def test_digits_split_is_stratified_and_disjoint():
    ds = data.load_digits(test_fraction=0.2)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    # Every class keeps about a fifth of its examples for testing.
    share = torch.bincount(ds.y_test) / (torch.bincount(ds.y_test) + torch.bincount(ds.y_train))
    assert torch.allclose(share, torch.full((10,), 0.2), atol=0.01)
    # Together the splits are the original data set, reordered: nothing lost, nothing repeated.
    bunch = sklearn.datasets.load_digits()
    original = sorted(
        zip(bunch.images.reshape(-1, 64).tolist(), bunch.target.tolist(), strict=True)
    )
    x = torch.cat([ds.x_train, ds.x_test]).reshape(-1, 64) * 16
    y = torch.cat([ds.y_train, ds.y_test])
    assert sorted(zip(x.tolist(), y.tolist(), strict=True)) == original


def test_digits_split_follows_seed():
    a, b, c = data.load_digits(seed=3), data.load_digits(seed=3), data.load_digits(seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, 0.9999, "0.5"])
def test_digits_rejects_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits(test_fraction=fraction)


# --- read_idx -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(TYPE_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips(tmp_path, dtype, gz):
    array = (np.arange(-30, 30).reshape(3, 4, 5) * 7).astype(dtype)
    result = data.read_idx(write_idx(tmp_path / "x-idx3", array, gz=gz))
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("name, gz", [("gzipped-without-suffix", True), ("plain.gz", False)])
def test_read_idx_detects_gzip_by_content(tmp_path, name, gz):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / name, array, gz=gz)), array)


GOOD = encode_idx(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
BROKEN_GZIP = gzip.compress(GOOD)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (GOOD[:-1], "truncated"),
        (GOOD[:9], "truncated"),
        (b"", "shorter than the 4-byte magic"),
        (b"\x01" + GOOD[1:], "magic number"),
        (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown type code 0x0A"),
        (GOOD + b"\x00", "1 trailing bytes"),
        (BROKEN_GZIP[:-6], "corrupt gzip"),
        (BROKEN_GZIP[:15] + bytes([BROKEN_GZIP[15] ^ 0xFF]) + BROKEN_GZIP[16:], "corrupt gzip"),
    ],
    ids=[
        "truncated-data",
        "truncated-header",
        "empty",
        "bad-magic",
        "type-code",
        "trailing",
        "gzip-truncated",
        "gzip-flipped-byte",
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, raw, problem):
    path = write_idx(tmp_path / "broken-idx3-ubyte", raw)
    with pytest.raises(IDXFormatError, match=problem) as caught:
        data.read_idx(path)
    message = str(caught.value)
    assert str(path) in message and "not a valid IDX file" in message
    assert "dataset-fashion-mnist" in message


# --- load_idx_folder ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "gz", "dot", "dot-gz"])
def test_load_idx_folder_reads_what_was_written(tmp_path, variant):
    ds = data.load_idx_folder(write_folder(tmp_path / "tiny", variant))
    assert ds.name == "tiny" and ds.num_classes == 10 and ds.image_size == 5
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        expected = torch.from_numpy(SMALL[split, "images"].astype(np.float32) / 255).unsqueeze(1)
        assert x.dtype == torch.float32 and torch.equal(x, expected)
        assert y.dtype == torch.int64 and y.tolist() == SMALL[split, "labels"].tolist()
    assert ds.describe() == "tiny: 7 train / 3 test images of 5×4, 10 classes"


def test_load_idx_folder_num_classes_is_max_label_plus_one(tmp_path):
    arrays = {
        **SMALL,
        ("train", "labels"): np.array([0, 1, 2, 1, 0, 2, 1], dtype=np.uint8),
        ("test", "labels"): np.array([0, 4, 1], dtype=np.uint8),
    }
    assert data.load_idx_folder(write_folder(tmp_path / "f", arrays=arrays), "x").num_classes == 5


def test_load_idx_folder_passes_on_corrupt_file(tmp_path):
    folder = write_folder(tmp_path / "f", "gz")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-4])
    with pytest.raises(IDXFormatError, match="t10k-labels-idx1-ubyte.gz.*corrupt gzip"):
        data.load_idx_folder(folder)


@pytest.mark.parametrize(
    "key, array, problem",
    [
        (("train", "labels"), np.zeros(6, dtype=np.uint8), "7 images but .*6 labels"),
        (("test", "images"), np.zeros((3, 5, 4), dtype=np.int16), "expected uint8 images"),
        (("test", "images"), np.zeros((3, 5, 5), dtype=np.uint8), "differ in size"),
        (("test", "labels"), np.zeros((3, 1), dtype=np.uint8), "expected integer labels"),
        (("test", "labels"), np.array([0, -1, 2], dtype=np.int8), "negative label"),
    ],
    ids=["count-mismatch", "float-images", "image-size", "label-shape", "negative-label"],
)
def test_load_idx_folder_rejects_inconsistent_files(tmp_path, key, array, problem):
    folder = write_folder(tmp_path / "f", arrays={**SMALL, key: array})
    with pytest.raises(ValueError, match=problem):
        data.load_idx_folder(folder)


def test_load_idx_folder_error_names_the_files(tmp_path):
    folder = write_folder(
        tmp_path / "f", arrays={**SMALL, ("train", "labels"): SMALL["test", "labels"]}
    )
    with pytest.raises(ValueError) as caught:
        data.load_idx_folder(folder)
    assert "train-images-idx3-ubyte" in str(caught.value)
    assert "train-labels-idx1-ubyte" in str(caught.value)


def test_missing_folder_names_the_files(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as caught:
        data.load_idx_folder(folder)
    message = str(caught.value)
    assert str(folder) in message and "dataset-fashion-mnist" in message
    assert all(stem in message for stem in data.IDX_FILES.values())
    assert "http" not in message


def test_missing_file_names_the_accepted_spellings(tmp_path):
    folder = write_folder(tmp_path / "f", "gz")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as caught:
        data.load_idx_folder(folder)
    message = str(caught.value)
    assert str(folder) in message and "dataset-fashion-mnist" in message
    for variant in ("plain", "gz", "dot", "dot-gz"):
        assert filename("t10k-images-idx3-ubyte", variant) in message
    assert "train-images" not in message  # only the missing file is reported


# --- real Fashion-MNIST (Debian's dataset-fashion-mnist) ----------------------------------------


def test_real_fashion_mnist():
    if not data.FASHION_MNIST_DEBIAN_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(
                f"{data.FASHION_MNIST_DEBIAN_DIR} is missing in CI: .ci/run should install the "
                "Debian package dataset-fashion-mnist"
            )
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    ds = data.load("fashion-mnist")
    assert ds.name == "fashion-mnist"
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1


# --- load and subset ----------------------------------------------------------------------------


def test_load_dispatches_by_name(tmp_path):
    assert data.load().describe() == data.load_digits().describe()
    assert torch.equal(data.load("digits", seed=5).y_test, data.load_digits(seed=5).y_test)
    ds = data.load("mnist", data_dir=write_folder(tmp_path / "m"))
    assert ds.name == "mnist" and len(ds.y_train) == 7


@pytest.mark.parametrize(
    "kwargs, error, problem",
    [
        (
            {"name": "cifar"},
            ValueError,
            r"name must be one of \('digits', 'mnist', 'fashion-mnist'\)",
        ),
        ({"name": "mnist"}, ValueError, "data_dir"),
        ({"name": "digits", "data_dir": "."}, ValueError, "data_dir"),
        ({"name": "mnist", "data_dir": ".", "seed": 1}, TypeError, "seed"),
    ],
)
def test_load_rejects_bad_arguments(kwargs, error, problem):
    with pytest.raises(error, match=problem):
        data.load(**kwargs)


def test_subset_takes_the_first_examples():
    ds = data.load_digits()
    small = data.subset(ds, train=100, test=20)
    assert small.x_train.shape == (100, 1, 8, 8) and small.x_test.shape == (20, 1, 8, 8)
    assert torch.equal(small.x_train, ds.x_train[:100]) and torch.equal(
        small.y_test, ds.y_test[:20]
    )
    assert small.name == ds.name and small.num_classes == ds.num_classes
    assert len(data.subset(ds, test=5).y_train) == len(ds.y_train)


@pytest.mark.parametrize(
    "kwargs", [{"train": 0}, {"train": 1348}, {"test": -1}, {"test": 2.0}, {"train": True}]
)
def test_subset_validates_sizes(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        data.subset(data.load_digits(), **kwargs)
