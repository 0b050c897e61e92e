"""Float reference architectures without torchvision, to cost with ``qatcore.cost.ace``.

ResNet-18 and ResNet-50 (He et al. 2016; the torchvision layout, stride on the 3×3 conv of a
bottleneck, "v1.5") and MobileNet-V1 (Howard et al. 2017). Each takes a ``width_multiplier``
(α, scaling every layer's channels), ``image_size`` (the input side; any size works, the nets
end in adaptive average pooling), ``in_channels`` and ``num_classes``; at the defaults
(1.0, 224, 3, 1000) they have the standard geometries. ``input_shape`` and ``example_input``
tell ``qatcore.cost.ace.count`` what to feed them.
"""

from __future__ import annotations

import torch
from torch import nn

from qatcore.checks import int_at_least, positive_number


def _channels(channels: int, width_multiplier: float) -> int:
    return max(1, int(channels * width_multiplier))


def _conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> list[nn.Module]:
    layers = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    return [*layers, nn.ReLU(inplace=True)] if relu else layers


class _Classifier(nn.Module):
    """Shared shape bookkeeping: ``input_shape`` and a zero ``example_input``."""

    def _setup(
        self, width_multiplier: float, image_size: int, in_channels: int, num_classes: int
    ) -> None:
        self.width_multiplier = positive_number("width_multiplier", width_multiplier)
        self.image_size = int_at_least("image_size", image_size, 8)
        self.num_classes = int_at_least("num_classes", num_classes, 1)
        self.input_shape = (int_at_least("in_channels", in_channels, 1), image_size, image_size)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """Zeros of shape ``(batch_size, *input_shape)``."""
        return torch.zeros(int_at_least("batch_size", batch_size, 1), *self.input_shape)


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual addition (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, width, 3, stride), *_conv_bn(width, width, 3, relu=False)
        )
        self.shortcut = _shortcut(c_in, width, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand ×4, with a residual addition (ResNet-50 and up)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(c_in, width, 1),
            *_conv_bn(width, width, 3, stride),
            *_conv_bn(width, c_out, 1, relu=False),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(c_in, c_out, 1, stride, relu=False))


class ResNet(_Classifier):
    """7×7/2 stem, 3×3/2 max pool, four stages of residual blocks, global average pool, fc."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, ...],
        width_multiplier: float = 1.0,
        image_size: int = 224,
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self._setup(width_multiplier, image_size, in_channels, num_classes)
        c = _channels(64, width_multiplier)
        self.stem = nn.Sequential(*_conv_bn(in_channels, c, 7, 2), nn.MaxPool2d(3, 2, 1))
        stages = []
        for index, depth in enumerate(depths):
            width = _channels(64 * 2**index, width_multiplier)
            blocks = []
            for b in range(depth):
                blocks.append(block(c, width, 2 if index > 0 and b == 0 else 1))
                c = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def ResNet18(
    width_multiplier: float = 1.0,
    image_size: int = 224,
    in_channels: int = 3,
    num_classes: int = 1000,
) -> ResNet:
    """ResNet-18: basic blocks, depths (2, 2, 2, 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), width_multiplier, image_size, in_channels, num_classes)


def ResNet50(
    width_multiplier: float = 1.0,
    image_size: int = 224,
    in_channels: int = 3,
    num_classes: int = 1000,
) -> ResNet:
    """ResNet-50: bottleneck blocks, depths (3, 4, 6, 3)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), width_multiplier, image_size, in_channels, num_classes)


# (output channels, stride) of the 13 depthwise-separable blocks of MobileNet-V1, Table 1
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *((512, 1),) * 5,
    (1024, 2),
    (1024, 1),
)


class MobileNetV1(_Classifier):
    """MobileNet-V1: a 3×3/2 conv, 13 depthwise-separable blocks (3×3 depthwise + 1×1 pointwise,
    each with batch norm and ReLU), global average pool, fc."""

    def __init__(
        self,
        width_multiplier: float = 1.0,
        image_size: int = 224,
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self._setup(width_multiplier, image_size, in_channels, num_classes)
        c = _channels(32, width_multiplier)
        layers = _conv_bn(in_channels, c, 3, 2)
        for channels, stride in MOBILENET_V1_BLOCKS:
            c_out = _channels(channels, width_multiplier)
            layers += [*_conv_bn(c, c, 3, stride, groups=c), *_conv_bn(c, c_out, 1)]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
