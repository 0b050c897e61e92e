"""Models beyond plain chains: residual blocks, SiLU and Hardswish, and the course's ResNet-18 and
MobileNet-V1 export to ONNX, QONNX and pt2 with parity; the formats that take only chains say so."""

import numpy as np
import pytest
import torch
from helpers import random_batch_norm_statistics
from torch import nn

import qatcore
from qatcore.architectures import BasicBlock, MobileNetV1, ResNet18
from qatcore.export import UnsupportedLayerError, export, graph, onnx_inspect, onnx_qdq, reference

X = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def resnet18() -> nn.Module:
    qatcore.configure(seed=4, threads=1)
    return random_batch_norm_statistics(ResNet18(0.125, 16, 1, 10), seed=5)


def mobilenet_v1() -> nn.Module:
    qatcore.configure(seed=4, threads=1)
    return random_batch_norm_statistics(MobileNetV1(0.125, 16, 1, 10), seed=5)


def test_a_residual_block_lowers_to_its_two_branches_and_an_add():
    block = random_batch_norm_statistics(BasicBlock(4, 8, stride=2), seed=1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), block, nn.Flatten()).eval()
    ops = graph.lower(model)
    residual = ops[1]
    assert [op.kind for op in ops] == ["conv", "residual", "relu", "flatten"]
    assert [op.kind for op in residual.attrs["body"]] == [
        "conv",
        "batchnorm",
        "relu",
        "conv",
        "batchnorm",
    ]
    assert [op.kind for op in residual.attrs["shortcut"]] == [
        "conv",
        "batchnorm",
    ]  # stride 2: a 1×1 conv
    proto = onnx_qdq.build(ops, (1, 16, 16))
    assert onnx_inspect.node_types(proto)["Add"] == 1
    with torch.no_grad():
        expected = model(X).numpy()
    np.testing.assert_allclose(reference.infer(ops, X.numpy()), expected, atol=1e-5)


def test_an_identity_shortcut_is_the_input_itself():
    block = random_batch_norm_statistics(BasicBlock(4, 4), seed=2)
    residual = graph.lower(block)[0]
    assert residual.attrs["shortcut"] == []  # nn.Identity lowers to nothing: Add(body(x), x)
    x = torch.rand(3, 4, 6, 6)
    with torch.no_grad():
        np.testing.assert_allclose(
            reference.infer(graph.lower(block), x.numpy()), block(x).numpy(), atol=1e-5
        )


@pytest.mark.parametrize("build", [resnet18, mobilenet_v1], ids=["resnet18", "mobilenet_v1"])
@pytest.mark.parametrize("format", ["onnx", "qonnx", "pt2"])
def test_the_course_architectures_export_with_parity(build, format, tmp_path):
    if format == "qonnx":
        pytest.importorskip("qonnx", reason="qonnx is the course extra")
    result = export(build(), tmp_path, format, X, name="m")
    assert result.parity.ok and result.parity.prediction_agreement == 1.0, result.parity
    if format == "onnx":
        types = result.metadata["onnx"]["node_types"]
        assert ("Add" in types) == (build is resnet18) and types["Conv"] >= 14


def test_mobilenet_v1_is_a_chain_so_it_packs_too(tmp_path):
    assert export(mobilenet_v1(), tmp_path, "packed", X, name="m").parity.ok


def test_residual_blocks_are_refused_by_the_chain_only_formats_with_the_reason(tmp_path):
    with pytest.raises(UnsupportedLayerError, match="packed format holds plain chains"):
        export(resnet18(), tmp_path, "packed", X, name="m")
    with pytest.raises(UnsupportedLayerError, match="8-bit variant takes plain chains"):
        export(resnet18(), tmp_path, "onnx", X, name="m", int8=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("format", ["onnx", "qonnx", "packed", "pt2"])
def test_silu_and_hardswish_export_with_parity(format, tmp_path):
    if format == "qonnx":
        pytest.importorskip("qonnx", reason="qonnx is the course extra")
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.SiLU(),
        nn.Conv2d(4, 4, 3),
        nn.Hardswish(),
        nn.Flatten(),
        nn.Linear(4 * 12 * 12, 10),
    ).eval()
    result = export(model, tmp_path, format, X * 8 - 4, name="m")  # inputs reaching both bends
    assert result.parity.ok, result.parity
