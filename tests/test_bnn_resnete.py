"""ResNetE-18: its layers against the authors' tab, its low-memory pieces against torch, training in both modes."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

from qatcore import zoo
from qatcore.bnn import functions as fn
from qatcore.bnn.layers import BinaryConv2d, RealLayer
from qatcore.bnn.memory import layer_shapes
from qatcore.bnn.models import CNV, ResNetE18
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.train import training_step

# the tab's layer rows 4–24 (k, m, n and the input and output sides), in its order
TAB_LAYERS = [("conv1", 7, 3, 64, 224, 112)]
for stage, (c_in, c_out, side) in enumerate(
    ((64, 64, 56), (64, 128, 28), (128, 256, 14), (256, 512, 7))
):
    if stage:
        TAB_LAYERS.append(("shortcut", 1, c_in, c_out, side, side))
    TAB_LAYERS.append(("binary", 3, c_in, c_out, 2 * side if stage else side, side))
    TAB_LAYERS += [("binary", 3, c_out, c_out, side, side)] * 3
TAB_LAYERS.append(("fc1", 1, 512, 1000, 1, 1))


def test_layers_are_the_tabs():
    shapes = [s for s in layer_shapes(ResNetE18()) if s.kind in ("binary", "real")]
    assert len(shapes) == len(TAB_LAYERS) == 21
    for s, (kind, k, m, n, side_in, side_out) in zip(shapes, TAB_LAYERS, strict=True):
        assert s.kind == ("binary" if kind == "binary" else "real")
        assert (s.weights, s.channels) == (k * k * m * n, n)
        assert (s.per_example, s.outputs) == (side_in**2 * m, side_out**2 * n)
    assert shapes[-1].bias == 1000 and all(s.bias == 0 for s in shapes[:-1])


def test_zoo_builds_it_and_bad_sizes_are_named():
    model = zoo.build("resnete18", image_size=64, num_classes=10)
    assert sum(isinstance(m, BinaryConv2d) for m in model.modules()) == 16
    assert sum(isinstance(m, RealLayer) for m in model.modules()) == 5
    with pytest.raises(ValueError, match="image_size"):
        ResNetE18(image_size=100)


@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from([4, 6, 8]), st.integers(0, 2**16))
@examples(25)
def test_low_memory_stem_pool_has_torch_s_gradient(n, c, side, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, c, side, side), generator=g).round_(
        decimals=1
    )  # ties: torch's first maximum
    dy = torch.randn((n, c, side // 2, side // 2), generator=g)
    ours = x.clone().requires_grad_()
    theirs = x.clone().requires_grad_()
    fn.MaxPool3x3.apply(ours).backward(dy)
    F.max_pool2d(theirs, 3, 2, 1).backward(dy)
    assert torch.equal(fn.MaxPool3x3.apply(x), F.max_pool2d(x, 3, 2, 1))
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-6)


def test_average_pool_relu_and_half_input_layer_gradients():
    torch.manual_seed(0)
    x, dy = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 3, 3)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    fn.AvgPool2x2.apply(ours).backward(dy)
    F.avg_pool2d(theirs, 2, 2).backward(dy)
    assert torch.allclose(ours.grad, theirs.grad)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    fn.ReLUMask.apply(ours, True).backward(x)
    F.relu(theirs).backward(x)
    assert torch.equal(ours.grad, theirs.grad)
    # a real layer in the low-memory mode: float16 input and weight, float32 arithmetic
    w = torch.randn(4, 3, 3, 3).half().requires_grad_()
    xin = x.half().float().requires_grad_()
    op = fn.ConvOp(1, 1)
    y = fn.HalfInputLayer.apply(xin, w, None, op)
    y.backward(torch.ones_like(y))
    ref_x, ref_w = xin.detach().clone().requires_grad_(), w.detach().float().requires_grad_()
    F.conv2d(ref_x, ref_w, padding=1).backward(torch.ones_like(y))
    assert w.grad.dtype == torch.float16
    assert torch.allclose(xin.grad, ref_x.grad, atol=1e-4)
    assert torch.allclose(w.grad.float(), ref_w.grad, rtol=1e-2, atol=1e-2)


def _train(mode: str, optimizer: str, steps: int = 3) -> list[float]:
    torch.manual_seed(0)
    model = ResNetE18(image_size=64, num_classes=10, mode=mode).train()
    opt = make_optimizer(model, mode, optimizer=optimizer)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand((2, 3, 64, 64), generator=g) * 2 - 1, torch.randint(0, 10, (2,), generator=g)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    losses = [training_step(model, opt, x, y) for _ in range(steps)]
    changed = [
        n for n, p in model.named_parameters() if not torch.equal(p.detach().float(), before[n])
    ]
    assert "fc.weight" in changed  # Bop flips a binary weight only once its average passes τ
    assert optimizer == "bop" or any("conv.weight" in n for n in changed)
    if mode == "low_memory":
        assert all(
            p.dtype == torch.float16
            for m in model.modules()
            if isinstance(m, RealLayer)
            for p in m.parameters()
        )
    return losses


@pytest.mark.parametrize("mode", ["standard", "low_memory"])
def test_both_algorithms_train_it(mode):
    losses = _train(mode, "bnn_adam")
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["bnn_sgd", "bop"])
@pytest.mark.parametrize("mode", ["standard", "low_memory"])
def test_both_algorithms_train_it_with_sgd_and_bop(mode, optimizer):
    assert all(math.isfinite(v) for v in _train(mode, optimizer))


def test_low_memory_sgd_steps_several_small_parameters_together():
    model = CNV(image_size=8, in_channels=1, mode="low_memory").train()
    opt = make_optimizer(model, "low_memory", optimizer="bnn_sgd")
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([1, 3, 2, 2])
    beta = [m.bias.detach().clone() for m in model.modules() if hasattr(m, "running_var")]
    training_step(model, opt, x, y)
    after = [m.bias for m in model.modules() if hasattr(m, "running_var")]
    assert any(not torch.equal(a, b) for a, b in zip(after, beta, strict=True))


def test_cli_bnn_memory_gives_the_tab_and_ace_counts_binary_operands_at_one_bit(capsys):
    import json

    from qatcore.bnn.memory import AUTHORS_SHEET_RESNETE18
    from qatcore.cli import main

    args = ["bnn-memory", "--model", "resnete18", "--batch-size", "4096", "--accounting", "authors"]
    assert main([*args, "--optimizer", "bnn_sgd", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["standard_bytes"] / 2**20 == pytest.approx(
        AUTHORS_SHEET_RESNETE18["standard", "sgd"], rel=1e-6
    )
    assert summary["low_memory_bytes"] / 2**20 == pytest.approx(
        AUTHORS_SHEET_RESNETE18["low_memory", "sgd"], rel=1e-6
    )
    # the sign activations' copysign has no ACE recipe yet (as for binarynet): it is an element-wise op, outside ACE
    assert main(["ace", "--model", "resnete18", "--json", "--allow-uncosted"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(u.endswith("sign.copysign (copysign)") for u in report["unknown"])
    layers = {row["layer"]: row for row in report["layers"]}
    real = sum(layers[n]["macs"] for n in ("stem.1", "fc"))
    real += sum(layers[f"blocks.{i}.shortcut.1"]["macs"] for i in (4, 8, 12))
    binary = sum(layers[f"blocks.{i}.conv"]["macs"] for i in range(16))
    # PokeBNN's conventions, per image: binary weights and inputs at 1 bit, real operands at 16 bits
    assert real == 112**2 * 7 * 7 * 3 * 64 + 3 * 28**2 * 64 * 128 + 512 * 1000
    assert report["per_image"] and report["totals"]["macs"] == real + binary
    assert report["totals"]["ace"] == 16 * 16 * real + binary
