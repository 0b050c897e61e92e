"""The float reference architectures: standard geometries at the defaults, arguments that work."""

import pytest
import torch

from qatcore import zoo
from qatcore.architectures import MobileNetV1, ResNet18, ResNet50

torch.set_num_threads(1)


def parameters(model):
    return sum(p.numel() for p in model.parameters())


# Published parameter counts: torchvision's model cards (ResNet-18 11,689,512; ResNet-50 25,557,032)
# and Howard et al. 2017, Table 6 (MobileNet-V1 4.2, 2.6, 1.3, 0.47 million for α = 1, 0.75, 0.5, 0.25)
@pytest.mark.parametrize(
    ("build", "published", "rel"),
    [
        (ResNet18, 11_689_512, 0),
        (ResNet50, 25_557_032, 0),
        (MobileNetV1, 4.2e6, 0.01),
        (lambda: MobileNetV1(0.75), 2.6e6, 0.01),
        (lambda: MobileNetV1(0.5), 1.3e6, 0.03),
        (lambda: MobileNetV1(0.25), 0.47e6, 0.01),
    ],
)
def test_parameter_counts_match_the_published_ones(build, published, rel):
    assert parameters(build()) == pytest.approx(published, rel=rel)


@pytest.mark.parametrize("build", [ResNet18, ResNet50, MobileNetV1])
@pytest.mark.parametrize(("width", "size", "classes"), [(0.25, 32, 10), (0.5, 64, 7)])
def test_any_width_input_size_and_class_count_runs(build, width, size, classes):
    model = build(
        width_multiplier=width, image_size=size, in_channels=1, num_classes=classes
    ).eval()
    x = model.example_input(3)
    assert x.shape == (3, 1, size, size) and model.input_shape == (1, size, size)
    assert model(x).shape == (3, classes)


def test_width_multiplier_scales_every_layer():
    narrow, wide = MobileNetV1(0.5), MobileNetV1(1.0)
    assert narrow.fc.in_features == 512 and wide.fc.in_features == 1024
    assert ResNet18(0.5).fc.in_features == 256 and ResNet50(0.5).fc.in_features == 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(width_multiplier=0), "width_multiplier must be a finite number > 0"),
        (dict(image_size=4), "image_size must be an int >= 8"),
        (dict(num_classes=0), "num_classes must be an int >= 1"),
        (dict(in_channels=1.5), "in_channels must be an int >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    for build in (ResNet18, MobileNetV1):
        with pytest.raises(ValueError, match=message):
            build(**kwargs)


def test_registered_in_the_zoo_with_an_input_shape():
    for name, build in [
        ("resnet18", ResNet18),
        ("resnet50", ResNet50),
        ("mobilenet_v1", MobileNetV1),
    ]:
        assert zoo.factory(name) is build
        assert zoo.input_shape(name, zoo.build(name, image_size=32)) == (3, 32, 32)
    assert zoo.input_shape("mnist_cnn", zoo.build("mnist_cnn")) == (1, 28, 28)
