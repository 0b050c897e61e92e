"""MNIST-style IDX files: parsing one file and loading a folder of the four standard files."""

from __future__ import annotations

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
IDX_DTYPES: dict[int, np.dtype] = {
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


#: the most data bytes an IDX file may claim (MNIST's largest file holds 47 MB): a header claiming
#: more is refused before anything is inflated or allocated
MAX_IDX_BYTES = 2**30

#: the most classes a label file may imply (ImageNet-21k has about 21 000)
MAX_CLASSES = 100_000


def _header(raw: bytes, invalid) -> tuple[np.dtype, tuple[int, ...], int]:
    """The dtype, shape and header size an IDX file's first bytes declare."""
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
    return IDX_DTYPES[type_code], shape, header_size


def _inflate(compressed: bytes, invalid) -> bytes:
    """Decompress a gzipped IDX file a piece at a time, never past what its header claims (plus one
    byte, to see trailing data), so a small file cannot inflate into gigabytes."""
    stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        head = stream.decompress(compressed, 4 + 4 * 255)
        if len(head) >= 4:
            need = 4 + 4 * head[3]
            while len(head) < need and stream.unconsumed_tail:
                head += stream.decompress(stream.unconsumed_tail, need - len(head))
        dtype, shape, header_size = _header(head, invalid)
        claimed = math.prod(shape) * dtype.itemsize
        if claimed > MAX_IDX_BYTES:
            raise invalid(
                f"its header claims {claimed} data bytes (shape {shape}), more than the "
                f"{MAX_IDX_BYTES} qatcore reads"
            )
        limit = header_size + claimed + 1
        pieces, size = [head], len(head)
        while stream.unconsumed_tail and size < limit:
            piece = stream.decompress(stream.unconsumed_tail, min(limit - size, 1 << 24))
            pieces.append(piece)
            size += len(piece)
    except zlib.error as error:
        raise invalid(f"corrupt gzip stream ({error})") from error
    if size < limit and not stream.eof:
        raise invalid("corrupt gzip stream (it ends before its end marker)")
    if stream.unused_data:
        raise invalid(f"corrupt gzip stream ({len(stream.unused_data)} bytes after its end)")
    return b"".join(pieces)


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
        raw = _inflate(raw, invalid)
    dtype, shape, header_size = _header(raw, invalid)
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
    classes = int(max(arrays["train", "labels"].max(), arrays["test", "labels"].max())) + 1
    # any uint8 label is accepted; wider ones may not imply more classes than there are labels
    seen = len(arrays["train", "labels"]) + len(arrays["test", "labels"])
    allowed = min(MAX_CLASSES, max(256, seen))
    if classes > allowed:
        raise ValueError(
            f"the labels in {folder} imply {classes} classes (largest label {classes - 1}), more "
            f"than the {allowed} allowed for {seen} labels: a label file is damaged"
        )

    def images_of(split: str) -> torch.Tensor:
        return torch.from_numpy(arrays[split, "images"]).float().div_(255).unsqueeze(1)

    def labels_of(split: str) -> torch.Tensor:
        return torch.from_numpy(arrays[split, "labels"].astype(np.int64))

    y_train, y_test = labels_of("train"), labels_of("test")
    return Dataset(
        name=folder.name if name is None else name,
        x_train=images_of("train"),
        y_train=y_train,
        x_test=images_of("test"),
        y_test=y_test,
        num_classes=classes,
    )
