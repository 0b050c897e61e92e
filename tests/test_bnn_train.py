"""qatcore.bnn models and training: standard mode = plain autograd, low-memory mode learns."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qatcore import zoo
from qatcore.bnn.functions import sign
from qatcore.bnn.layers import (
    BinaryConv2d,
    BinaryLayer,
    BinaryLinear,
    L1BatchNorm,
    MaxPool2d,
    SignActivation,
    batch_norm_scale_shift,
    binary_layers,
)
from qatcore.bnn.models import BNNMLP, CNV, BinaryNet, set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.train import BNNConfig, signed_inputs, train_alike, train_bnn
from qatcore.data import load, subset


def plain_forward(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The standard algorithm written with torch ops only, autograd doing every gradient."""
    for m in model:
        if isinstance(m, BinaryLayer):
            keep = (m.weight.abs() < 1).float()
            # straight-through: value sign(·) exactly, gradient of the second term (v − v = 0 exactly)
            wb = sign(m.weight).detach() + (m.weight * keep - (m.weight * keep).detach())
            xb = sign(x).detach() + (x - x.detach()) if m.binary_input else x
            x = (
                F.linear(xb, wb)
                if isinstance(m, BinaryLinear)
                else F.conv2d(xb, wb, padding=m.padding)
            )
        elif isinstance(m, SignActivation):
            clipped = x.clamp(-1, 1)
            x = sign(x).detach() + (clipped - clipped.detach())
        elif isinstance(m, MaxPool2d):
            x = F.max_pool2d(x, 2, 2)
        else:
            x = m(x)
    return x


@pytest.mark.parametrize("factory", [BNNMLP, CNV, BinaryNet])
def test_standard_mode_gradients_equal_plain_autograd(factory):
    torch.manual_seed(0)
    model = factory(image_size=8, in_channels=1)
    x, y = torch.rand(6, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (6,))
    grads = []
    for forward in (model, lambda v: plain_forward(model, v)):
        model.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for ours, plain in zip(*grads, strict=False):
        assert torch.allclose(ours, plain, rtol=1e-4, atol=1e-5)


def test_low_memory_mode_trains_and_the_loss_falls():
    data = subset(load("digits"), train=600, test=200)
    torch.manual_seed(0)
    result = train_bnn(
        BNNMLP(image_size=8), data, BNNConfig(mode="low_memory", epochs=4), progress=False
    )
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.6 * first
    assert result.test_accuracy > 0.6


def test_set_mode_changes_storage_not_layers_and_keeps_eval_semantics():
    torch.manual_seed(0)
    model = CNV(image_size=8, in_channels=1)
    layers = list(binary_layers(model).values())
    set_mode(model, "low_memory")
    assert list(binary_layers(model).values()) == layers
    assert all(layer.weight.dtype == torch.float16 and layer.low_memory for layer in layers)
    assert sum(isinstance(m, L1BatchNorm) for m in model.modules()) == 9
    model.train()
    F.cross_entropy(model(torch.rand(4, 1, 8, 8) * 2 - 1), torch.arange(4)).backward()
    model.eval()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    manual = x
    for m in model:  # the documented forward: sign(W), BN as a·x + b, sign, pooling
        if isinstance(m, BinaryLayer):
            xb = sign(manual) if m.binary_input else manual
            wb = m.binary_weight()
            manual = (
                F.linear(xb, wb)
                if isinstance(m, BinaryLinear)
                else F.conv2d(xb, wb, padding=m.padding)
            )
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            a, b = batch_norm_scale_shift(m)
            view = (1, -1) + (1,) * (manual.dim() - 2)
            manual = manual * a.view(view) + b.view(view)
        else:
            manual = m(manual)
    assert torch.allclose(model(x), manual, atol=1e-4)
    set_mode(model, "standard")
    assert all(layer.weight.dtype == torch.float32 for layer in layers)
    assert not any(isinstance(m, L1BatchNorm) for m in model.modules())


def test_layer_attributes_other_modules_read():
    first, other = BinaryConv2d(3, 8, binary_input=False), BinaryLinear(4, 2)
    assert (first.weight_bits, first.input_bits, other.input_bits) == (1, 32, 1)
    assert first.bias is None and other.bias is None
    with pytest.raises(TypeError, match="binary_input"):
        BinaryLinear(4, 2, binary_input=1)


@pytest.mark.parametrize("name", ["bnn_mlp", "cnv", "binarynet"])
def test_zoo_models_build_at_standard_and_digits_size(name):
    big = zoo.build(name)
    assert big(torch.zeros((2, *big.input_shape))).shape == (2, 10)
    small = zoo.build(name, image_size=8, in_channels=1)
    assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mode must be one of"):
        BNNMLP(mode="fast")
    with pytest.raises(ValueError, match="image_size"):
        CNV(image_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        BNNConfig(batch_size=1)


def test_train_alike_gives_twin_runs_the_same_batches_and_another_seed_other_ones():
    """Two copies of one model with optimisers alike end alike, their losses the same at every step; a run drawn
    with another seed sees other batches."""
    data = signed_inputs(load("digits"))
    torch.manual_seed(0)
    a = set_mode(BNNMLP(image_size=8, hidden=16), "low_memory")
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    runs = [(m, make_optimizer(m, "low_memory")) for m in (a, b)]
    losses = train_alike(runs, data, 5, batch_size=20, seed=3)
    assert len(losses) == 2 and len(losses[0]) == 5 and losses[0] == losses[1]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    other = train_alike([(c, make_optimizer(c, "low_memory"))], data, 5, batch_size=20, seed=4)
    assert other[0][0] != losses[0][0]  # the same weights, another first batch


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(seed=-1), "seed"),
        (dict(runs=[]), "runs"),
    ],
)
def test_train_alike_says_what_is_wrong_with_its_arguments(bad, match):
    model = BNNMLP(image_size=8, hidden=16)
    given = (
        dict(runs=[(model, make_optimizer(model, "standard"))], data=load("digits"), steps=1) | bad
    )
    with pytest.raises(ValueError, match=match):
        train_alike(**given)
