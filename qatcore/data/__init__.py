"""Datasets for the course, all offline: scikit-learn's bundled 8×8 digits, and MNIST-style IDX files.

``load("digits")`` needs nothing but scikit-learn. MNIST and Fashion-MNIST are read from IDX files
already on disk (Debian's ``dataset-fashion-mnist`` package, or a folder you fill yourself);
qatcore never downloads data.
"""

from __future__ import annotations

from pathlib import Path

from qatcore.checks import check_choice
from qatcore.data.dataset import Dataset, subset
from qatcore.data.digits import load_digits
from qatcore.data.idx import (
    FASHION_MNIST_DEBIAN_DIR,
    IDX_DTYPES,
    IDX_FILES,
    IDXFormatError,
    load_idx_folder,
    read_idx,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DEBIAN_DIR",
    "IDX_DTYPES",
    "IDX_FILES",
    "IDXFormatError",
    "Dataset",
    "load",
    "load_digits",
    "load_idx_folder",
    "read_idx",
    "subset",
]

DATASETS = ("digits", "mnist", "fashion-mnist")


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
