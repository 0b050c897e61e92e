"""Datasets for the course, all offline: scikit-learn's bundled 8×8 digits, and MNIST-style IDX files.

``load("digits")`` needs nothing but scikit-learn. MNIST and Fashion-MNIST are read from IDX files
already on disk (Debian's ``dataset-fashion-mnist`` package, or a folder you fill yourself);
qatcore never downloads data.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn.datasets
import torch

from qatcore.checks import check_choice

DATASETS = ("digits", "mnist", "fashion-mnist")
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# The four files of an MNIST-style folder, keyed by split and part.
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

# IDX type code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file that is not a valid IDX file (bad header, wrong length or corrupt gzip)."""


@dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """Train and test splits: images float32 N×1×H×W in [0, 1], labels int64 in 0..num_classes-1."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.float32 or x.dim() != 4 or x.shape[1] != 1:
                raise ValueError(
                    f"x_{split} must be float32 N×1×H×W, got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != x.shape[:1]:
                raise ValueError(
                    f"y_{split} must be int64 of shape ({x.shape[0]},), "
                    f"got {y.dtype} {tuple(y.shape)}"
                )
        if self.x_train.shape[2:] != self.x_test.shape[2:]:
            raise ValueError(
                f"train and test images differ in size: {tuple(self.x_train.shape[2:])} "
                f"vs {tuple(self.x_test.shape[2:])}"
            )

    @property
    def image_size(self) -> int:
        """Image height H (the course's images are square)."""
        return self.x_train.shape[2]

    def describe(self) -> str:
        """One-line summary, e.g. 'digits: 1347 train / 450 test images of 8×8, 10 classes'."""
        height, width = self.x_train.shape[2:]
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_test)} test images "
            f"of {height}×{width}, {self.num_classes} classes"
        )

    def __repr__(self) -> str:
        return f"Dataset({self.describe()})"


def _how_to_get(folder: Path | str) -> str:
    return (
        "On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` puts Fashion-MNIST in "
        f"{FASHION_MNIST_DEBIAN_DIR}; otherwise copy the four IDX files of MNIST or Fashion-MNIST "
        f"(gzipped or not) into {folder}. qatcore never downloads data."
    )


def _split_indices(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified seeded split: each class gets its share of the ceil(N·test_fraction) test slots."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    n_test = math.ceil(len(labels) * test_fraction)
    if not 0 < n_test < len(labels):
        raise ValueError(
            f"test_fraction={test_fraction} leaves an empty split of {len(labels)} examples"
        )
    # Largest-remainder rounding, so the per-class test counts add up to exactly n_test.
    shares = counts * n_test / len(labels)
    per_class = np.floor(shares).astype(int)
    leftovers = np.argsort(-(shares - per_class), kind="stable")[: n_test - per_class.sum()]
    per_class[leftovers] += 1
    train, test = [], []
    for cls, n_cls_test in zip(classes, per_class, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test.append(members[:n_cls_test])
        train.append(members[n_cls_test:])
    # Shuffle across classes too, so the first n examples (see subset) are a fair sample.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 images), split by class and seed: the offline default."""
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    bunch = sklearn.datasets.load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = _split_indices(bunch.target, test_fraction, seed)
    train, test = torch.from_numpy(train), torch.from_numpy(test)
    return Dataset(
        name="digits",
        x_train=images[train],
        y_train=labels[train],
        x_test=images[test],
        y_test=labels[test],
        num_classes=10,
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (the MNIST format), gzipped or not, into a native-endian NumPy array."""
    path = Path(path)
    raw = path.read_bytes()

    def invalid(problem: str) -> IDXFormatError:
        return IDXFormatError(
            f"{path} is not a valid IDX file: {problem}. "
            f"Replace it with an intact copy. {_how_to_get(path.parent)}"
        )

    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise invalid(f"corrupt gzip stream ({error})") from error
    if len(raw) < 4:
        raise invalid(f"only {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[:2] != b"\x00\x00":
        raise invalid(f"magic number starts with {raw[:2].hex()}, expected 0000")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise invalid(f"unknown type code 0x{type_code:02X} (known: {known})")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise invalid(f"header truncated: {ndim} dimensions need {header_size} bytes")
    shape = tuple(int(size) for size in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header_size
    if actual < expected:
        raise invalid(f"truncated: shape {shape} needs {expected} data bytes, found {actual}")
    if actual > expected:
        raise invalid(f"{actual - expected} trailing bytes after the {expected} data bytes")
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """Locate the four standard files, accepting '.gz' and the '.idx' dot spelling."""

    def candidates(stem: str) -> list[str]:
        dotted = stem.replace("-idx", ".idx")
        return [stem, stem + ".gz", dotted, dotted + ".gz"]

    accepted = ", ".join(IDX_FILES.values())
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Folder {folder} does not exist; it should hold the IDX files {accepted} "
            f"(each optionally gzipped, ending in .gz). {_how_to_get(folder)}"
        )
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        paths = [folder / name for name in candidates(stem) if (folder / name).is_file()]
        if paths:
            found[key] = paths[0]
        else:
            missing.append(" or ".join(candidates(stem)))
    if missing:
        raise FileNotFoundError(
            f"Missing IDX files in {folder}: looked for {'; '.join(missing)}. {_how_to_get(folder)}"
        )
    return found


def load_idx_folder(folder: str | Path, name: str | None = None) -> Dataset:
    """MNIST or Fashion-MNIST from a folder of the four standard IDX files (uint8 images / 255)."""
    folder = Path(folder)
    paths = _find_idx_files(folder)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images_path, labels_path = paths[split, "images"], paths[split, "labels"]
        images, labels = arrays[split, "images"], arrays[split, "labels"]
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"{images_path}: expected uint8 images N×H×W, got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{labels_path}: expected integer labels of shape (N,), "
                f"got {labels.dtype} {labels.shape}"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"{images_path} holds {len(images)} images but {labels_path} "
                f"holds {len(labels)} labels"
            )
        if len(labels) == 0:
            raise ValueError(f"{images_path} and {labels_path} hold no examples")
        if labels.min() < 0:
            raise ValueError(f"{labels_path}: negative label {labels.min()}")

    def images(split: str) -> torch.Tensor:
        return torch.from_numpy(arrays[split, "images"]).float().div_(255).unsqueeze(1)

    def labels(split: str) -> torch.Tensor:
        return torch.from_numpy(arrays[split, "labels"].astype(np.int64))

    y_train, y_test = labels("train"), labels("test")
    return Dataset(
        name=folder.name if name is None else name,
        x_train=images("train"),
        y_train=y_train,
        x_test=images("test"),
        y_test=y_test,
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
    )


def load(name: str = "digits", data_dir: str | Path | None = None, **kwargs) -> Dataset:
    """Load one of DATASETS by name; 'digits' takes load_digits' options, the others a data_dir."""
    check_choice("name", name, DATASETS)
    if name == "digits":
        if data_dir is not None:
            raise ValueError("data_dir does not apply to 'digits', which scikit-learn bundles")
        return load_digits(**kwargs)
    if kwargs:
        raise TypeError(f"load({name!r}) takes no options besides data_dir, got {sorted(kwargs)}")
    if data_dir is None:
        if name == "mnist":
            raise ValueError(
                "load('mnist') needs data_dir, a folder holding the four MNIST IDX files"
            )
        data_dir = FASHION_MNIST_DEBIAN_DIR
    return load_idx_folder(data_dir, name=name)


def subset(dataset: Dataset, train: int | None = None, test: int | None = None) -> Dataset:
    """The first `train` / `test` examples of each split (None keeps all), for quick runs."""

    def first(x: torch.Tensor, y: torch.Tensor, n: int | None, arg: str):
        if n is None:
            return x, y
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(y):
            raise ValueError(f"{arg} must be an int in 1..{len(y)} or None, got {n!r}")
        return x[:n].clone(), y[:n].clone()

    x_train, y_train = first(dataset.x_train, dataset.y_train, train, "train")
    x_test, y_test = first(dataset.x_test, dataset.y_test, test, "test")
    return dataclasses.replace(
        dataset, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
