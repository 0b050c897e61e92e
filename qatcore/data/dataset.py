"""A dataset as the course uses it: train and test image tensors with their labels, and quick subsets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


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
