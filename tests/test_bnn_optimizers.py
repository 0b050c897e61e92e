"""Bop against Larq's update rule in NumPy, 1-bit weight gradients against their float formula, SGD."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

from qatcore.bnn.functions import weight_gradient
from qatcore.bnn.models import BNNMLP, CNV, set_mode
from qatcore.bnn.optim import Bop, HalfAdam, HalfSGD, Optimizers, make_optimizer
from qatcore.bnn.train import BNNConfig
from qatcore.optimizers import PRESETS


def larq_bop(w, m, g, gamma, threshold):
    """Larq's Bop written out: ``m_t = m + γ(g − m)``; ``w_t = sign(−sign(w·m_t − τ)·w)`` (sign(0) = +1)."""
    m_t = m + gamma * (g - m)
    flipped = -np.sign(w * m_t - threshold) * w
    return np.where(flipped >= 0, 1.0, -1.0), m_t


@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 1.0), st.floats(0.0, 1e-2))
@examples(25)
def test_bop_follows_larqs_rule(seed, gamma, threshold):
    rng = np.random.default_rng(seed)
    w = np.where(rng.random(300) < 0.5, -1.0, 1.0).astype(np.float32)
    p = torch.nn.Parameter(torch.from_numpy(w.copy()))
    opt, m = Bop([p], gamma=gamma, threshold=threshold), np.zeros(300, np.float32)
    for _ in range(5):
        g = (rng.standard_normal(300) * 1e-2).astype(np.float32)
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        w, m = larq_bop(w, m, g, np.float32(gamma), np.float32(threshold))
        agree = (p.detach().numpy() == w) | (
            np.abs(w * m - threshold) < 1e-6
        )  # ties at τ: float rounding
        assert agree.all()
        np.testing.assert_allclose(
            opt.state[p]["m"].numpy(), m, rtol=1e-5, atol=1e-8
        )  # float32 steps of ~1e-2 terms


def test_half_bop_keeps_scaled_float16_state_and_flips_like_float32():
    torch.manual_seed(0)
    w = torch.where(torch.rand(4096) < 0.5, -1.0, 1.0)
    a, b = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone().half())
    full, half = Bop([a], 0.1, 1e-3), Bop([b], 0.1, 1e-3, half=True)
    for _ in range(10):
        g = torch.where(torch.rand(4096) < 0.5, -1.0, 1.0) / 64  # ±1/√N, the low-memory gradient
        a.grad, b.grad = g.clone(), g.half()
        full.step()
        half.step()
    assert half.state[b]["m"].dtype == torch.float16
    assert (a.detach() == b.detach().float()).float().mean() > 0.99


def test_one_bit_weight_gradients_equal_the_float16_ones():
    torch.manual_seed(0)
    model = BNNMLP(image_size=8)
    x, y = torch.rand(20, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (20,))
    grads = []
    for bits in (False, True):
        set_mode(model, "low_memory", bit_gradients=bits).train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        grads.append([weight_gradient(m.weight) for m in model if hasattr(m, "binary_input")])
        if bits:
            assert all(
                m.weight.grad is None and m.weight.grad_bits.numel() == -(-m.weight.numel() // 8)
                for m in model
                if hasattr(m, "binary_input")
            )
    for dense, packed in zip(
        *grads, strict=True
    ):  # float16 rounds 1/√N; the bits keep it in float32
        assert torch.equal(dense.sign(), packed.sign()) and torch.allclose(
            dense, packed, rtol=1e-3, atol=0
        )
    # chunks of the packed gradient are slices of the whole
    w = next(m.weight for m in model if hasattr(m, "binary_input"))
    assert torch.equal(weight_gradient(w, 8, 200), grads[1][0][8:200])


@pytest.mark.parametrize(
    ("reference", "half", "scale", "atol", "states"),
    [
        (
            lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
            lambda p: HalfSGD(p, lr=1e-2),
            1e-2,
            1e-4,
            ("momentum_buffer",),
        ),
        (
            lambda p: torch.optim.Adam(p, lr=1e-2),
            lambda p: HalfAdam(p, lr=1e-2),
            1e-3,
            2e-3,
            ("m", "r"),
        ),
    ],
    ids=["sgd", "adam"],
)
def test_half_precision_optimizers_follow_torch_s(reference, half, scale, atol, states):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(50))
    b = torch.nn.Parameter(a.detach().clone())
    theirs, ours = reference([a]), half([b])
    for _ in range(20):
        g = torch.randn(50) * scale
        a.grad, b.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
    assert torch.allclose(a, b, atol=atol)
    assert [ours.state[b][key].dtype for key in states] == [torch.float16] * len(states)


@pytest.mark.parametrize("mode", ["standard", "low_memory"])
def test_bop_flips_only_binary_weights_and_adam_trains_beta(mode):
    torch.manual_seed(0)
    model = set_mode(BNNMLP(image_size=8), mode).train()
    opt = make_optimizer(model, mode, replace(PRESETS["bop"], gamma=0.5))
    assert isinstance(opt, Optimizers) and len(opt.optimizers) == 2
    binary = [m.weight for m in model if hasattr(m, "binary_input")]
    assert all(set(w.detach().float().unique().tolist()) <= {-1.0, 1.0} for w in binary)
    before = [w.detach().clone() for w in binary]
    x, y = torch.rand(50, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (50,))
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(set(w.detach().float().unique().tolist()) <= {-1.0, 1.0} for w in binary)
    assert any((w != b).any() for w, b in zip(binary, before, strict=True))


def test_bad_optimizer_arguments_are_named():
    model = BNNMLP(image_size=8)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(model, "standard", optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule must be 'constant'"):
        BNNConfig(optimizer="adam")  # paper 1's Adam decays its rate; the BNN trainer does not
    with pytest.raises(ValueError, match="gamma"):
        Bop(model.parameters(), gamma=0.0)
    with pytest.raises(ValueError, match="gradient"):
        set_mode(model, "low_memory", gradient="int8")


def test_cli_trains_with_bop_and_float16_gradients(capsys):
    from qatcore.cli import main

    assert (
        main(
            [
                "bnn-train",
                "--model",
                "bnn_mlp",
                "--mode",
                "low_memory",
                "--optimizer",
                "bop",
                "--gradient",
                "float16",
                "--epochs",
                "1",
                "--json",
            ]
        )
        == 0
    )
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["optimizer"] == "bop" and 0.3 < summary["test_accuracy"] <= 1


@pytest.mark.parametrize("factory", [BNNMLP, CNV])
def test_chunked_low_memory_layers_equal_whole_batch_ones(factory, monkeypatch):
    from qatcore.bnn import functions

    torch.manual_seed(0)
    model = set_mode(factory(image_size=8, in_channels=1), "low_memory").train()
    x, y = torch.rand(13, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (13,))
    runs = []
    for values in (
        functions.CHUNK_VALUES,
        100,
    ):  # 100 values: a few rows per chunk, rows cut mid-byte
        monkeypatch.setattr(functions, "CHUNK_VALUES", values)
        model.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out, y).backward()
        runs.append(
            (out.detach(), [weight_gradient(p) for p in model.parameters() if p.requires_grad])
        )
    assert len(functions.batch_chunks((13, 1, 8, 8), 100)) > 1
    assert torch.equal(runs[0][0], runs[1][0])
    for whole, chunked in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.allclose(whole, chunked, rtol=1e-3, atol=1e-6)


def test_half_adam_on_unit_gradients_follows_torch_s_float32_adam():
    """The low-memory binary weights' group: Adam on √N·dW with √N·ε is Adam on dW (``±1/√N`` or 0)."""
    torch.manual_seed(0)
    n = 4096
    a = torch.nn.Parameter(torch.randn(n) * 0.05)
    b = torch.nn.Parameter(a.detach().clone().half())
    start = b.detach().float().clone()
    # an ε near √v (1/√N = 1/64) shows that it is scaled with the gradient
    theirs = torch.optim.Adam([a], lr=1e-3, eps=1e-2)
    ours = HalfAdam([{"params": [b], "unit_gradients": True}], lr=1e-3, eps=1e-2)
    for _ in range(30):
        g = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) * (torch.rand(n) < 0.9) / n**0.5
        a.grad, b.grad = g.clone(), g.half()
        theirs.step()
        ours.step()
    assert set(ours.state[b]) == {"step", "m", "v"} and ours.state[b]["v"].dtype == torch.float16
    moved = (b.detach().float() - start).abs()
    assert b.dtype == torch.float16 and moved.max() > 1e-2  # 30 steps of up to lr each
    assert torch.allclose(a.detach(), b.detach().float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("mode", ["standard", "low_memory"])
@pytest.mark.parametrize("name", ["bnn_adam", "bnn_sgd", "bop"])
def test_each_named_config_builds_what_it_says(mode, name):
    """The optimiser of a preset carries the preset's own settings, not torch's defaults."""
    config = replace(PRESETS[name], lr=0.25, beta2=0.5, momentum=0.75, eps=1e-3)
    opt = make_optimizer(set_mode(BNNMLP(image_size=8), mode), mode, config)
    adam = opt.optimizers[1] if name == "bop" else opt
    group = adam.param_groups[-1]
    assert group["lr"] == 0.25
    if name == "bnn_sgd":
        assert group["momentum"] == 0.75
    else:
        assert group["betas"] == (0.9, 0.5) and group["eps"] == 1e-3
    if name == "bop":
        assert opt.optimizers[0].param_groups[0]["gamma"] == PRESETS["bop"].gamma
