"""Write MNIST-format IDX files for tests (the format, encoded independently of qatcore.data)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from qatcore import data

TYPE_CODES = {
    "uint8": 0x08,
    "int8": 0x09,
    "int16": 0x0B,
    "int32": 0x0C,
    "float32": 0x0D,
    "float64": 0x0E,
}


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes of `array`: 0, 0, type code, ndim, big-endian uint32 sizes, big-endian data."""
    header = bytes([0, 0, TYPE_CODES[array.dtype.name], array.ndim])
    sizes = np.array(array.shape, dtype=">u4").tobytes()
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray | bytes, gz: bool = False) -> Path:
    """Write `array` (or ready-made raw bytes) as an IDX file, gzipped if `gz`."""
    raw = array if isinstance(array, bytes) else encode_idx(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def filename(stem: str, variant: str) -> str:
    """`stem` spelt as one of the accepted variants: plain, gz, dot, dot-gz."""
    name = stem.replace("-idx", ".idx") if variant.startswith("dot") else stem
    return name + ".gz" if variant.endswith("gz") else name


def write_folder(folder: Path, variant: str, arrays: dict) -> Path:
    """A folder with the four standard IDX files of `arrays`, named in the given variant."""
    folder.mkdir(exist_ok=True)
    for key, stem in data.IDX_FILES.items():
        write_idx(folder / filename(stem, variant), arrays[key], gz=variant.endswith("gz"))
    return folder
