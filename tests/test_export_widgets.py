"""Notebook 06's dashboard: every format at the slider's ends and middle exports, reloads and agrees."""

import pytest
import torch
from matplotlib.figure import Figure

from qatcore import data
from qatcore.estimators.layers import quantized_layers
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.train import TrainConfig, train
from qatcore.export.widgets import export_explorer, export_view, requantized
from qatcore.optimizers import OptimizerConfig


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    digits = data.subset(data.load("digits"), train=256, test=60)
    model = MNISTCNN(bits=2, image_size=8)
    train(
        model,
        digits,
        TrainConfig(OptimizerConfig("adam", lr=3e-3), batch_size=64, epochs=2),
        progress=False,
    )
    return model, digits


@pytest.mark.parametrize("format", ["onnx", "packed", "pt2"])
@pytest.mark.parametrize("bits", [2, 5, 8])
def test_export_view_at_every_format_and_width(trained, format, bits):
    model, digits = trained
    text, figure = export_view(model, digits.x_test, digits.y_test, format, bits)
    assert isinstance(figure, Figure)
    assert text.startswith(f"{bits}-bit CNN as {format}: ") and "agree on 100.0%" in text


def test_requantizing_changes_the_copy_only(trained):
    model, _ = trained
    copy = requantized(model, 8)
    assert {layer.bits for layer in quantized_layers(copy).values()} == {8}
    assert {layer.bits for layer in quantized_layers(model).values()} == {2}
    with pytest.raises(ValueError, match="bits"):
        requantized(model, 0)


def test_explorer_redraws_when_a_control_moves(trained):
    model, digits = trained
    box = export_explorer(model, digits.x_test, digits.y_test)
    (choose, width), label = box.children[0].children, box.children[1]
    assert label.value.startswith("2-bit CNN as onnx")
    width.value = 8
    assert label.value.startswith("8-bit CNN as onnx")
    choose.value = "packed"
    assert label.value.startswith("8-bit CNN as packed")
