"""scikit-learn's bundled 8×8 digits, split by class and seed: the offline default dataset."""

from __future__ import annotations

import math

import numpy as np
import sklearn.datasets
import torch

from qatcore.data.dataset import Dataset


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
    train_rows, test_rows = _split_indices(bunch.target, test_fraction, seed)
    train, test = torch.from_numpy(train_rows), torch.from_numpy(test_rows)
    return Dataset(
        name="digits",
        x_train=images[train],
        y_train=labels[train],
        x_test=images[test],
        y_test=labels[test],
        num_classes=10,
    )
