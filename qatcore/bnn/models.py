"""The paper's BNN models (layer lists of the authors' public training code) and the mode switch.

* ``BNNMLP``: 784 → 256 → 256 → 256 → 256 → 10 (an 8×8 ``digits`` image gives 64 inputs).
* ``CNV``: conv 64, 64, pool, 128, 128, pool, 256, 256 (3×3, 'valid' padding), dense 512, 512, 10.
  'valid' padding needs a 32×32 input; a smaller image (28×28, 8×8) uses 'same' padding instead.
* ``BinaryNet``: conv 128, 128, pool, 256, 256, pool, 512, 512, pool (3×3, 'same'), dense 1024,
  1024, 10; the pool sits between the conv and its batch norm, as in the authors' code.
* ``ResNetE18`` (``resnete18``): the ImageNet model, as the authors lay it out (the ResNetE-18 tab of
  their memory spreadsheet and ``energy_estimation/example_get_energy_resnetE.py`` on their
  ``dev_birealnet`` branch): a real-valued stem (batch norm of the image, 7×7/2 conv 64, batch norm,
  ReLU, 3×3/2 max-pool, batch norm), then 16 blocks of ``x + BN(binary 3×3 conv(sign(x)))``, 4 per
  stage at 64, 128, 256, 512 channels; a stage's first block strides 2 and its shortcut is a 2×2
  average pool, a real 1×1 conv and a batch norm; then ReLU, global average pool, a real dense layer.

In the three small models every binary layer is followed by a batch norm, and every batch norm but
the last by a sign activation; the first layer sees the full-precision image (scaled to [−1, 1] by
the trainer). ResNetE-18 keeps its first and last layers and its shortcuts real-valued: float32 in
the standard mode, float16 weights and float16 saved inputs in the low-memory one (the authors' tab
counts them at 16 bits); every batch norm becomes the paper's l1 batch norm in the low-memory mode.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from qatcore.bnn.functions import GRADIENT_FORMATS
from qatcore.bnn.layers import (
    AvgPool2d,
    BinaryConv2d,
    BinaryLayer,
    BinaryLinear,
    L1BatchNorm,
    L1BatchNorm1d,
    L1BatchNorm2d,
    MaxPool2d,
    RealConv2d,
    RealLayer,
    RealLinear,
    ReLU,
    SignActivation,
    StemMaxPool2d,
)
from qatcore.bnn.streamed import streamed_forward
from qatcore.checks import check_choice, int_at_least

MODES = ("standard", "low_memory")
BATCH_NORM_EPS = 1e-4  # the authors' Keras setting for the standard batch norm


def _batch_norm(features: int, dims: int) -> nn.BatchNorm1d | nn.BatchNorm2d:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features, eps=BATCH_NORM_EPS)


class StreamedSequential(nn.Sequential):
    """A ``Sequential`` BNN whose low-memory training step runs as one streamed pass over the whole network
    (``qatcore.bnn.streamed``) while ``streamed`` is True (the default); otherwise, and in every other case,
    module by module."""

    streamed = True
    #: outside a training step its forward is ``nn.Sequential``'s (what an exporter needs to know)
    runs_children_in_order = True

    def forward(self, x):
        out = streamed_forward(self, x)
        return super().forward(x) if out is None else out


def _dense_stack(widths: list[int], first_binary: bool) -> list[nn.Module]:
    """Binary dense layers ``widths[0] → widths[1] → …`` with batch norm, sign between them."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:], strict=False)):
        layers += [
            BinaryLinear(n_in, n_out, binary_input=first_binary or i > 0),
            _batch_norm(n_out, 1),
        ]
        if i < len(widths) - 2:
            layers.append(SignActivation())
    return layers


def _check_shape(image_size: int, in_channels: int, num_classes: int) -> None:
    int_at_least("image_size", image_size, 8)
    int_at_least("in_channels", in_channels, 1)
    int_at_least("num_classes", num_classes, 2)


class BNNMLP(StreamedSequential):
    """The paper's MNIST MLP: four hidden binary dense layers of 256."""

    def __init__(
        self,
        image_size: int = 28,
        in_channels: int = 1,
        num_classes: int = 10,
        hidden: int = 256,
        mode: str = "standard",
    ) -> None:
        _check_shape(image_size, in_channels, num_classes)
        int_at_least("hidden", hidden, 1)
        widths = [in_channels * image_size**2] + [hidden] * 4 + [num_classes]
        super().__init__(nn.Flatten(), *_dense_stack(widths, first_binary=False))
        self.input_shape = (in_channels, image_size, image_size)
        set_mode(self, mode)


def _cnv_side(image_size: int, padding: int) -> int:
    side = image_size
    for _ in range(2):
        side = (side - 4 + 4 * padding) // 2
    return side - 4 + 4 * padding


class CNV(StreamedSequential):
    """The paper's CNV for 32×32 CIFAR-10/SVHN images (any square image ≥ 8 with 'same' padding)."""

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
        mode: str = "standard",
    ) -> None:
        _check_shape(image_size, in_channels, num_classes)
        padding = 0 if _cnv_side(image_size, 0) >= 1 else 1
        layers: list[nn.Module] = []
        channels = [in_channels, 64, 64, 128, 128, 256, 256]
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False)):
            layers += [
                BinaryConv2d(c_in, c_out, 3, padding=padding, binary_input=i > 0),
                _batch_norm(c_out, 2),
                SignActivation(),
            ]
            if i in (1, 3):
                layers.append(MaxPool2d())
        flat = 256 * _cnv_side(image_size, padding) ** 2
        super().__init__(*layers, nn.Flatten(), *_dense_stack([flat, 512, 512, num_classes], True))
        self.input_shape = (in_channels, image_size, image_size)
        set_mode(self, mode)


class BinaryNet(StreamedSequential):
    """Courbariaux et al.'s BinaryNet for 32×32 images ('same' padding; any image ≥ 8 pixels)."""

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
        mode: str = "standard",
    ) -> None:
        _check_shape(image_size, in_channels, num_classes)
        layers: list[nn.Module] = []
        channels = [in_channels, 128, 128, 256, 256, 512, 512]
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False)):
            layers.append(BinaryConv2d(c_in, c_out, 3, padding=1, binary_input=i > 0))
            if i % 2 == 1:
                layers.append(MaxPool2d())
            layers += [_batch_norm(c_out, 2), SignActivation()]
        flat = 512 * (image_size // 8) ** 2
        super().__init__(
            *layers, nn.Flatten(), *_dense_stack([flat, 1024, 1024, num_classes], True)
        )
        self.input_shape = (in_channels, image_size, image_size)
        set_mode(self, mode)


class ResNetEBlock(nn.Module):
    """``shortcut(x) + BN(binary 3×3 conv(sign(x)))``; the shortcut is ``x`` itself, or, where the block
    strides or widens, a 2×2 average pool, a real 1×1 conv and a batch norm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                AvgPool2d(), RealConv2d(in_channels, out_channels, 1), _batch_norm(out_channels, 2)
            )
        )
        self.sign = SignActivation()
        self.conv = BinaryConv2d(in_channels, out_channels, 3, padding=1, stride=stride)
        self.bn = _batch_norm(out_channels, 2)

    def forward(self, x):
        shortcut = self.shortcut(x)  # first, as the authors' tab lists a stage's 1×1 conv first
        return shortcut + self.bn(self.conv(self.sign(x)))


class ResNetE18(nn.Module):
    """Binarized ResNetE-18 for 224×224 ImageNet images (any square side that is a multiple of 32)."""

    def __init__(
        self,
        image_size: int = 224,
        in_channels: int = 3,
        num_classes: int = 1000,
        mode: str = "standard",
    ) -> None:
        _check_shape(image_size, in_channels, num_classes)
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {image_size!r}")
        super().__init__()
        self.stem = nn.Sequential(
            _batch_norm(in_channels, 2),
            RealConv2d(in_channels, 64, 7, stride=2, padding=3),
            _batch_norm(64, 2),
            ReLU(),
            StemMaxPool2d(),
            _batch_norm(64, 2),
        )
        blocks, channels = [], 64
        for width in (64, 128, 256, 512):
            for i in range(4):
                blocks.append(ResNetEBlock(channels, width, 2 if i == 0 and width > 64 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.relu = ReLU()
        self.fc = RealLinear(512, num_classes)
        self.input_shape = (in_channels, image_size, image_size)
        set_mode(self, mode)

    def forward(self, x):
        return self.fc(self.relu(self.blocks(self.stem(x))).mean((2, 3)))


#: the paper's models by their one name (``qatcore.zoo`` lists the same entries under the same
#: names; tests/test_zoo.py checks that they agree)
MODELS: dict[str, type[nn.Module]] = {
    "bnn_mlp": BNNMLP,
    "cnv": CNV,
    "binarynet": BinaryNet,
    "resnete18": ResNetE18,
}


def check_mode(mode: object) -> str:
    """``mode`` if it is one of MODES, else a ValueError naming it."""
    return cast(str, check_choice("mode", mode, MODES))


def _swap_batch_norm(bn: nn.modules.batchnorm._BatchNorm, low_memory: bool) -> nn.Module:
    dims = 1 if isinstance(bn, nn.BatchNorm1d) else 2
    new: nn.BatchNorm1d | nn.BatchNorm2d
    if low_memory:
        new = (L1BatchNorm1d if dims == 1 else L1BatchNorm2d)(bn.num_features)
    else:
        new = _batch_norm(bn.num_features, dims)
    new.bias.data.copy_(bn.bias.data)
    return new


def set_mode(
    model: nn.Module, mode: str, gradient: str = "po2", bit_gradients: bool = True
) -> nn.Module:
    """Switch ``model`` in place to the ``standard`` or ``low_memory`` training algorithm.

    Low-memory: binary layers keep packed bits and get the paper's gradients (``dY`` as ``gradient``,
    ``"po2"`` or ``"float16"``; ``dW`` as sign bits with ``bit_gradients``, else float16), their latent
    weights become float16, batch norms become l1 batch norms (float16). Standard: float32 and torch's
    batch norm. Binary layers stay the same objects; batch norms keep their β.
    """
    low_memory = check_mode(mode) == "low_memory"
    check_choice("gradient", gradient, GRADIENT_FORMATS)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if (
                isinstance(child, nn.modules.batchnorm._BatchNorm)
                and isinstance(child, L1BatchNorm) != low_memory
            ):
                setattr(parent, name, _swap_batch_norm(child, low_memory))
    for module in model.modules():
        if isinstance(module, BinaryLayer):
            module.weight.data = (
                module.weight.data.half() if low_memory else module.weight.data.float()
            )
            module.gradient, module.bit_gradients = gradient, bool(bit_gradients)
        if isinstance(module, RealLayer):
            for p in module.parameters(recurse=False):
                p.data = p.data.half() if low_memory else p.data.float()
        if isinstance(
            module, (BinaryLayer, RealLayer, SignActivation, MaxPool2d, ReLU, StemMaxPool2d)
        ):
            module.low_memory = low_memory
    model.training_mode = mode  # type: ignore[assignment]  # Module's __setattr__ is typed for tensors and modules only
    return model
