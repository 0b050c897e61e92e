"""The binary weights' Adam ``v`` kept as one shared value and the values that differ: the same steps, bit for bit."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from qatcore.bnn import optim
from qatcore.bnn.measure import tensor_bytes
from qatcore.bnn.models import BNNMLP, set_mode
from qatcore.bnn.optim import HalfAdam, make_optimizer
from qatcore.bnn.shared_moment import (
    INDEX,
    SHARED,
    VALUES,
    WHOLE,
    listed,
    moment_bytes,
    whole_moment,
)
from qatcore.bnn.train import BNNConfig, signed_inputs, train_alike, train_bnn
from qatcore.data import load
from qatcore.optimizers import PRESETS


def _unit_gradient(n: int, outside: float, generator: torch.Generator) -> torch.Tensor:
    """``±1/√n``, 0 for a share ``outside`` of the weights (as for weights beyond ±1)."""
    signs = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    return (signs * (torch.rand(n, generator=generator) >= outside) / n**0.5).half()


def _pair(n: int, lr: float = 1e-3):
    torch.manual_seed(0)
    a = torch.nn.Parameter((torch.randn(n) * 0.05).half())
    b = torch.nn.Parameter(a.detach().clone())
    shared = HalfAdam([{"params": [a], "unit_gradients": True}], lr=lr)
    whole = HalfAdam([{"params": [b], "unit_gradients": True}], lr=lr, shared_moment=False)
    return a, b, shared, whole


def _assert_same(a, b, shared: HalfAdam, whole: HalfAdam) -> None:
    assert torch.equal(a.detach().view(torch.int16), b.detach().view(torch.int16))
    assert torch.equal(
        shared.state[a]["m"].view(torch.int16), whole.state[b]["m"].view(torch.int16)
    )
    v = whole_moment(shared.state[a], a).view(torch.int16)
    assert torch.equal(v, whole.state[b][WHOLE].view(torch.int16))


def _step_both(a, b, shared: HalfAdam, whole: HalfAdam, g: torch.Tensor) -> None:
    """One step of each optimiser on the same gradient, then the same weights, ``m`` and ``v``."""
    a.grad, b.grad = g.clone(), g.clone()
    shared.step()
    whole.step()
    _assert_same(a, b, shared, whole)


@pytest.mark.parametrize("chunk", [1 << 17, 1 << 10])
def test_a_shared_v_steps_as_a_whole_one_bit_for_bit_and_lists_only_the_weights_set_apart(
    chunk, monkeypatch
):
    """Gradients ±1 everywhere keep ``v`` one value; weights with a 0 gradient at some step are listed, and the
    steps equal those of a whole float16 ``v`` in every bit, over one chunk and over several."""
    monkeypatch.setattr(optim, "CHUNK", chunk)
    n = 5000
    a, b, shared, whole = _pair(n)
    generator = torch.Generator().manual_seed(1)
    for step in range(12):
        _step_both(a, b, shared, whole, _unit_gradient(n, 0.0 if step < 6 else 0.002, generator))
        state = shared.state[a]
        assert WHOLE not in state and state[SHARED].shape == ()
        if step < 6:
            assert state[INDEX].numel() == 0
    listed = shared.state[a][INDEX]
    assert 0 < listed.numel() < 100 and listed.dtype == torch.int32
    assert torch.equal(listed, listed.sort().values)
    kept = [shared.state[a][k] for k in ("m", SHARED, INDEX, VALUES)]
    assert tensor_bytes(kept) == 2 * n + 2 + 6 * listed.numel()  # m, the shared value, the list


@pytest.mark.parametrize("chunk", [1 << 17, 1 << 10])
def test_a_shared_v_becomes_whole_where_its_list_would_be_as_large(chunk, monkeypatch):
    """Where most weights are set apart the list would outgrow ``v``: it is kept whole from then on, in the middle
    of a step too (several chunks), and the steps stay equal."""
    monkeypatch.setattr(optim, "CHUNK", chunk)
    n = 5000
    a, b, shared, whole = _pair(n)
    generator = torch.Generator().manual_seed(2)
    kinds = []
    for step in range(8):
        _step_both(a, b, shared, whole, _unit_gradient(n, 0.0 if step < 3 else 0.2, generator))
        kinds.append(WHOLE in shared.state[a])
    assert not kinds[0] and kinds[-1]
    assert set(shared.state[a]) == {"step", "m", WHOLE}


def test_training_the_low_memory_mlp_gives_the_same_weights_and_state_with_a_shared_v(monkeypatch):
    """The low-memory MLP (1-bit weight gradients, masked where ``|w| > 1``) at a rate that drives weights out of
    ±1, trained alike with a shared ``v`` and with whole ones: the same losses, weights and ``m``, each ``v`` the
    same, in a fraction of the bytes."""
    monkeypatch.setattr(optim, "CHUNK", 1 << 12)
    torch.manual_seed(0)
    a = set_mode(BNNMLP(image_size=8), "low_memory").train()
    b = copy.deepcopy(a)
    fast = dataclasses.replace(PRESETS["bnn_adam"], lr=0.02)
    shared = make_optimizer(a, "low_memory", fast)
    whole = make_optimizer(b, "low_memory", fast, shared_moment=False)
    assert all(g["lr"] == 0.02 for g in [*shared.param_groups, *whole.param_groups])
    losses = train_alike(
        [(a, shared), (b, whole)], signed_inputs(load("digits")), 60, batch_size=64
    )
    assert losses[0] == losses[1] and len(losses[0]) == 60
    binary = [p for p in a.parameters() if p.dim() > 1]
    assert any(shared.state[p][INDEX].numel() for p in binary)  # some weights left ±1
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
        if p.dim() > 1:
            _assert_same(p, q, shared, whole)
        elif p.requires_grad:  # the batch norms' β
            assert torch.equal(shared.state[p]["r"], whole.state[q]["r"])
    kept = [
        shared.state[p][k]
        for p in binary
        for k in (SHARED, INDEX, VALUES, WHOLE)
        if k in shared.state[p]
    ]
    assert moment_bytes(shared) == tensor_bytes(kept) < moment_bytes(whole) / 5
    # a float16 v per binary weight
    assert moment_bytes(whole) == 2 * sum(p.numel() for p in binary)


def test_a_shared_v_survives_a_state_dict_round_trip():
    """Loading the state keeps the listed positions integers and the steps after it equal."""
    n = 3000
    a, b, shared, whole = _pair(n)
    generator = torch.Generator().manual_seed(3)
    for step in range(6):
        _step_both(a, b, shared, whole, _unit_gradient(n, 0.01 * (step > 2), generator))
    saved = copy.deepcopy(shared.state_dict())
    assert saved["state"][0][INDEX].numel() > 0
    c = torch.nn.Parameter(a.detach().clone())
    again = HalfAdam([{"params": [c], "unit_gradients": True}], lr=1e-3)
    again.load_state_dict(saved)
    assert again.state[c][INDEX].dtype == torch.int32
    assert torch.equal(again.state[c][INDEX], shared.state[a][INDEX])
    for _ in range(3):
        _step_both(c, b, again, whole, _unit_gradient(n, 0.01, generator))
    assert VALUES in again.state[c]


def test_shared_moment_must_be_a_bool():
    with pytest.raises(TypeError, match="shared_moment"):
        HalfAdam([torch.nn.Parameter(torch.zeros(2))], shared_moment="yes")


def test_the_shared_value_is_not_taken_from_a_weight_set_apart():
    """A weight whose gradient was 0 is listed; the shared value of later steps comes from another weight, so the
    list stays that one weight (taken from it, every other weight would be listed)."""
    n = 64
    a, b, shared, whole = _pair(n)
    signs = torch.where(torch.arange(n) % 3 == 0, -1.0, 1.0) / n**0.5
    for step in range(4):
        g = signs.clone()
        if step == 0:
            g[0] = 0.0
        _step_both(a, b, shared, whole, g.half())
        assert shared.state[a][INDEX].tolist() == [0]


def test_a_trained_low_memory_model_s_optimizer_says_how_many_values_of_v_it_lists():
    """``train_bnn`` returns its optimiser; ``listed`` counts the listed values of ``v`` over the binary weights (a
    whole ``v`` counts whole)."""
    data = load("digits")
    torch.manual_seed(0)
    result = train_bnn(
        BNNMLP(image_size=8, hidden=16),
        data,
        BNNConfig(mode="low_memory", epochs=1),
        progress=False,
    )
    binary = [p for p in result.optimizer.state if p.dim() > 1]
    assert listed(result.optimizer) == (
        sum(result.optimizer.state[p][INDEX].numel() for p in binary),
        sum(p.numel() for p in binary),
    )
    whole = HalfAdam([{"params": binary, "unit_gradients": True}], shared_moment=False)
    for p in binary:
        p.grad = torch.full_like(p, 0.01)
    whole.step()
    assert listed(whole) == (sum(p.numel() for p in binary),) * 2


@pytest.mark.parametrize("value", [-0.75, 0.0, 0.4487, 65504.0])
@pytest.mark.parametrize("n", [1, 3, 4, 7, 1003])
def test_one_value_that_differs_bit_for_bit_is_found_wherever_it_lies(value, n):
    """Four values at a time where ``v`` is aligned, one at a time in its tail or where it is not: any single
    value that differs from the shared one, −0 beside +0 too, is found."""
    from qatcore.bnn.shared_moment import _differ

    shared = torch.tensor(value, dtype=torch.float16)
    for offset in (0, 1):  # aligned, and not
        row = torch.full((n + 1,), value, dtype=torch.float16)
        assert not _differ(row[offset : offset + n], shared)
        for k in range(n):
            odd = row.clone()
            odd[offset + k] = -0.0 if value == 0 else 0.5
            assert _differ(odd[offset : offset + n], shared)
