"""MNIST-style IDX files: parsing one file and loading a folder of the four standard files."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from qatcore.data.dataset import Dataset

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


def _how_to_get(folder: Path | str) -> str:
    return (
        "On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` puts Fashion-MNIST in "
        f"{FASHION_MNIST_DEBIAN_DIR}; otherwise copy the four IDX files of MNIST or Fashion-MNIST "
        f"(gzipped or not) into {folder}. qatcore never downloads data."
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
