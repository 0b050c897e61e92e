"""The papers' models, built from qatcore's quantized layers."""

from __future__ import annotations

from torch import nn

from qatcore.checks import int_at_least
from qatcore.estimators.layers import QuantConv2d


class MNISTCNN(nn.Sequential):
    """The first paper's MNIST CNN: only the two conv kernels are quantized.

    Conv32 3×3 → ReLU → avgpool 2 → Conv64 3×3 → ReLU → avgpool 2 → Dense256 → ReLU → Dense10,
    with 'same' padding, so a 28×28 input reaches the dense layer as 64×7×7 and an 8×8 `digits`
    image as 64×2×2.
    """

    def __init__(
        self, bits: int = 2, estimator="ste", image_size: int = 28, num_classes: int = 10
    ) -> None:
        int_at_least("image_size", image_size, 4)
        int_at_least("num_classes", num_classes, 2)
        side = image_size // 2 // 2
        super().__init__(
            QuantConv2d(1, 32, 3, padding=1, bits=bits, estimator=estimator),
            nn.ReLU(),
            nn.AvgPool2d(2),
            QuantConv2d(32, 64, 3, padding=1, bits=bits, estimator=estimator),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * side * side, 256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )
