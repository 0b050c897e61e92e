"""ImageNet-layout folders read with Pillow: layout checks, crops, determinism."""

import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from qatcore.architectures import ResNet18
from qatcore.data.image_folder import (
    RATIO,
    ImageFolder,
    centre_box,
    random_resized_box,
    write_synthetic_folder,
)
from qatcore.estimators.layers import QuantConv2d, quantize_convolutions, quantized_layers


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_folder(
        tmp_path_factory.mktemp("imagenet"), classes=3, train_per_class=4, val_per_class=2
    )


def test_the_layout_gives_sorted_classes_and_labelled_normalised_images(root):
    train = ImageFolder(root, "train", image_size=16)
    assert train.classes == ["n00000000", "n00000001", "n00000002"]
    assert len(train) == 12 and [label for _, label in train.samples] == [0] * 4 + [1] * 4 + [2] * 4
    image, label = train[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1
    assert train[0][0].shape == (3, 16, 16)  # the greyscale JPEG comes out as RGB
    assert -3 < float(image.min()) < float(image.max()) < 3  # normalised by ImageNet's mean and std


def test_training_crops_depend_on_seed_epoch_and_index_only(root):
    train = ImageFolder(root, "train", image_size=16, seed=1)
    first = [train[i][0] for i in range(len(train))]
    assert all(torch.equal(a, train[i][0]) for i, a in enumerate(first))
    train.set_epoch(1)
    assert sum(not torch.equal(a, train[i][0]) for i, a in enumerate(first)) >= len(first) - 1
    assert not torch.equal(ImageFolder(root, "train", image_size=16, seed=2)[3][0], first[3])


def test_evaluation_images_are_one_fixed_centre_crop(root):
    val = ImageFolder(root, "val", image_size=16)
    assert not val.train and len(val) == 6 and val.resize == 18
    val.set_epoch(5)
    assert torch.equal(val[1][0], ImageFolder(root, "val", image_size=16)[1][0])


def test_bad_layouts_are_named(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir"):
        ImageFolder(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="ROOT/train/CLASS/IMAGE"):
        ImageFolder(root, "test")
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(
        ValueError, match=r"val classes differ from train's: extra \['b'\], missing \['a'\]"
    ):
        ImageFolder(tmp_path, "val")
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolder(tmp_path, "train")
    with pytest.raises(ValueError, match="image_size"):
        ImageFolder(root, image_size=4)


@given(width=st.integers(1, 2000), height=st.integers(1, 2000), seed=st.integers(0, 2**32))
def test_random_resized_boxes_lie_inside_the_image(width, height, seed):
    left, top, right, bottom = random_resized_box((width, height), random.Random(seed))
    assert 0 <= left < right <= width and 0 <= top < bottom <= height


@given(width=st.integers(64, 2000), height=st.integers(64, 2000), seed=st.integers(0, 2**32))
def test_random_resized_boxes_keep_an_allowed_aspect_ratio(width, height, seed):
    left, top, right, bottom = random_resized_box((width, height), random.Random(seed))
    assert (
        RATIO[0] * 0.9 < (right - left) / (bottom - top) < RATIO[1] * 1.1
    )  # rounding of small boxes


def test_the_centre_box_is_the_resize_then_crop_region():
    assert centre_box((256, 256), 256, 224) == (16, 16, 240, 240)
    # shorter side 512 → 256 halves the image, so the 224 crop is a 448-pixel square in the middle
    assert centre_box((1024, 512), 256, 224) == (288, 32, 736, 480)


def test_quantize_convolutions_swaps_every_kernel_and_keeps_the_geometry():
    float_net = ResNet18(0.25, 32, 3, 5)
    convs = {name: m for name, m in float_net.named_modules() if isinstance(m, nn.Conv2d)}
    net = quantize_convolutions(ResNet18(0.25, 32, 3, 5), bits=3, estimator="dsq")
    layers = quantized_layers(net)
    assert set(layers) == set(convs) and all(
        isinstance(layer, QuantConv2d) for layer in layers.values()
    )
    for name, layer in layers.items():
        old = convs[name]
        assert (layer.weight.shape, layer.stride, layer.padding, layer.groups) == (
            old.weight.shape,
            old.stride,
            old.padding,
            old.groups,
        )
        assert layer.bits == 3 and layer.estimator.name == "dsq"
    assert type(net.fc) is nn.Linear
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
