"""The streamed low-memory step (``qatcore.bnn.streamed``) against the layer-by-layer one it replaces."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qatcore.bnn import functions as fn
from qatcore.bnn import streamed
from qatcore.bnn.models import BNNMLP, CNV, BinaryNet, ResNetE18, set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.train import training_step

#: small chunks and budgets (``ROW_VALUES``, the share of ``OUTPUT_SHARE`` and ``GRADIENT_SHARE``), so that a small
#: batch takes every path: several chunks per stage, int16 outputs kept whole, in part or counted in a histogram,
#: gradients kept in float16 whole, in part or recomputed
SETTINGS = {
    "small buffers": (2_000, 0.03),
    "partly kept": (2_000, 0.45),
    "large buffers": (2_000, 1.0),
}
MODELS = {
    "mlp": (lambda: BNNMLP(image_size=8), 24),
    "cnv": (lambda: CNV(), 10),
    "cnv_same_padding": (lambda: CNV(image_size=28, in_channels=1), 9),
    "binarynet": (lambda: BinaryNet(image_size=16), 11),
}


def _pair(build, gradient="po2"):
    torch.manual_seed(0)
    net = set_mode(build(), "low_memory", gradient).train()
    layered = copy.deepcopy(net)
    layered.streamed = False
    return net, layered


def _batch(net, n, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *net.input_shape), generator=generator) * 2 - 1
    return x, torch.randint(0, 10, (n,), generator=generator)


def _state(net: nn.Module):
    bits = [getattr(p, "grad_bits", None) for p in net.parameters()]
    grads = [p.grad for p in net.parameters()]
    return bits, grads, [t.clone() for t in net.state_dict().values()]


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None
        else:
            assert torch.equal(x, y)


@pytest.fixture
def count_streamed(monkeypatch):
    calls = []
    original = streamed.StreamedNetwork.apply

    def apply(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(streamed.StreamedNetwork, "apply", apply)
    return calls


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_streamed_step_is_bit_equal_to_the_layer_by_layer_step(
    name, setting, monkeypatch, count_streamed
):
    monkeypatch.setattr(streamed, "ROW_VALUES", SETTINGS[setting][0])
    monkeypatch.setattr(streamed, "OUTPUT_SHARE", SETTINGS[setting][1])
    monkeypatch.setattr(streamed, "GRADIENT_SHARE", SETTINGS[setting][1])
    build, n = MODELS[name]
    net, layered = _pair(build)
    x, y = _batch(net, n)
    logits, layered_logits = net(x), layered(x)
    assert count_streamed, "the streamed step did not run"
    assert torch.equal(logits, layered_logits)
    F.cross_entropy(logits, y).backward()
    F.cross_entropy(layered_logits, y).backward()
    _assert_same(_state(net)[0], _state(layered)[0])  # the 1-bit weight gradients
    _assert_same(_state(net)[1], _state(layered)[1])  # the batch norms' dβ
    _assert_same(_state(net)[2], _state(layered)[2])  # the running statistics


def test_streamed_training_follows_the_layer_by_layer_training(count_streamed):
    """Three Adam steps with small chunks, budgets and weight blocks (``streamed.budgets``): every weight and
    statistic stays identical."""
    net, layered = _pair(MODELS["cnv_same_padding"][0])
    runs = []
    for model in (net, layered):
        optimizer = make_optimizer(model, "low_memory")
        with streamed.budgets(
            row_values=2_000, output_share=0.03, gradient_share=0.03, conv_block=5_000
        ):
            runs.append(
                [training_step(model, optimizer, *_batch(model, 9, seed)) for seed in range(3)]
            )
    assert count_streamed and runs[0] == runs[1]
    _assert_same(list(net.state_dict().values()), list(layered.state_dict().values()))


def _settings() -> tuple:
    return (
        streamed.ROW_VALUES,
        streamed.OUTPUT_SHARE,
        streamed.GRADIENT_SHARE,
        streamed.CONV_BLOCK,
    )


def test_budgets_hold_inside_and_are_restored_after_even_an_error():
    defaults = _settings()
    with streamed.budgets(row_values=4_096, gradient_share=0.1, conv_block=1_000):
        assert _settings() == (4_096, defaults[1], 0.1, 1_000)
    with pytest.raises(RuntimeError), streamed.budgets(output_share=0.0):
        assert streamed.OUTPUT_SHARE == 0.0
        raise RuntimeError("inside")
    assert _settings() == defaults


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"row_values": 0}, "row_values"),
        ({"row_values": 2.5}, "row_values"),
        ({"output_share": 1.5}, "output_share"),
        ({"output_share": -0.1}, "output_share"),
        ({"gradient_share": float("nan")}, "gradient_share"),
        ({"gradient_share": True}, "gradient_share"),
        ({"conv_block": 0}, "conv_block"),
        ({"conv_block": "65536"}, "conv_block"),
    ],
)
def test_budgets_refuse_what_is_not_a_size_or_a_share(given, named):
    defaults = _settings()
    with pytest.raises(ValueError, match=named), streamed.budgets(**given):
        pass
    assert _settings() == defaults


def test_float16_gradients_stream_too(monkeypatch, count_streamed):
    monkeypatch.setattr(streamed, "ROW_VALUES", 2_000)
    net, layered = _pair(MODELS["binarynet"][0], gradient="float16")
    x, y = _batch(net, 7)
    F.cross_entropy(net(x), y).backward()
    F.cross_entropy(layered(x), y).backward()
    assert count_streamed
    _assert_same(_state(net)[0], _state(layered)[0])


def test_outputs_and_gradients_are_kept_in_part_between_the_buffers(monkeypatch):
    """The "partly kept" setting keeps the first rows of CNV's large layer outputs and gradients (the
    parametrised test above checks that the step stays bit-equal with it)."""
    monkeypatch.setattr(streamed, "ROW_VALUES", SETTINGS["partly kept"][0])
    monkeypatch.setattr(streamed, "OUTPUT_SHARE", SETTINGS["partly kept"][1])
    monkeypatch.setattr(streamed, "GRADIENT_SHARE", SETTINGS["partly kept"][1])
    stores, gradients = [], []
    counted, kept = streamed._counted_statistics, streamed._Kept.__init__

    def counting(first_rows, z_shape, chunks, largest, store):
        stores.append((0 if store is None else store.shape[0], z_shape[0]))
        return counted(first_rows, z_shape, chunks, largest, store)

    def keeping(self, values, recompute):
        gradients.append((values.shape[0], recompute is None))
        kept(self, values, recompute)

    monkeypatch.setattr(streamed, "_counted_statistics", counting)
    monkeypatch.setattr(streamed._Kept, "__init__", keeping)
    net, _ = _pair(MODELS["cnv"][0])
    x, y = _batch(net, MODELS["cnv"][1])
    F.cross_entropy(net(x), y).backward()
    assert any(0 < rows < n for rows, n in stores), stores
    assert any(0 < rows < len(x) and not whole for rows, whole in gradients), gradients
    assert any(rows == len(x) and whole for rows, whole in gradients)


def test_histogram_statistics_equal_those_of_a_kept_output(monkeypatch):
    counted_statistics = streamed._counted_statistics
    generator = torch.Generator().manual_seed(3)
    z = torch.randint(-40, 41, (13, 5, 4, 4), generator=generator).float()
    chunks = [(0, 4), (4, 9), (9, 13)]

    def rows(i, j):
        return z[i:j].clone()

    kept = streamed._statistics(rows, rows, z.shape, chunks, 40, 1 << 20)
    calls = []
    monkeypatch.setattr(
        streamed, "_counted_statistics", lambda *a: calls.append(1) or counted_statistics(*a)
    )
    # too small for z (2080 bytes as int16) and enough for its counts (5 channels × 81 values as int32) and
    # its first 9 rows
    counted = streamed._statistics(rows, rows, z.shape, chunks, 40, 1_700)
    assert calls, "the histogram was not used"
    assert kept[2] is not None and counted[2] is not None
    assert torch.equal(counted[2], z[:9].to(torch.int16))
    assert torch.equal(kept[0], counted[0]) and torch.equal(kept[1], counted[1])
    assert torch.equal(kept[0], z.mean((0, 2, 3)).half().float())
    assert torch.allclose(kept[1], (z - kept[0].view(1, -1, 1, 1)).abs().mean((0, 2, 3)))


def test_histogram_counts_follow_chunks_whose_values_lie_apart():
    """The counts cover the range of values met so far: a chunk below it, then one above it, widen it on either
    side, each chunk's counts landing on its own values."""
    generator = torch.Generator().manual_seed(5)
    parts = [(-3, 4), (-30, -20), (25, 39)]  # each chunk's values, none overlapping the others'
    z = torch.cat(
        [torch.randint(lo, hi, (3, 2, 3, 3), generator=generator) for lo, hi in parts]
    ).float()
    chunks = [(0, 3), (3, 6), (6, 9)]
    mu, spread = streamed._counted_statistics(
        lambda i, j: z[i:j].clone(), z.shape, chunks, 40, None
    )
    assert torch.equal(mu, z.mean((0, 2, 3)).half().float())
    assert torch.allclose(spread, (z - mu.view(1, -1, 1, 1)).abs().mean((0, 2, 3)))


def test_the_bound_of_the_largest_gradient_is_never_below_it():
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        g = torch.randn((6, 3, 2, 2), generator=generator).half().float()
        signs = torch.where(torch.rand(g.shape, generator=generator) < 0.5, -1.0, 1.0)
        reductions = streamed._Reductions(3)
        reductions.add(g.clone(), (signs > 0).to(torch.uint8))
        # the sums are exact for float16 values: Σ sign·g from Σg and the positive part is Σ sign·g itself
        assert torch.equal(reductions.total, g.double().sum((0, 2, 3)))
        assert torch.equal(reductions.correlation, (signs * g).double().sum((0, 2, 3)))
        inverse = torch.rand((1, 3, 1, 1), generator=generator) + 0.5
        shift, slope = torch.randn((2, 1, 3, 1, 1), generator=generator)
        true = fn.largest_magnitude(torch.addcmul(shift, g, inverse).addcmul_(signs, slope))
        assert streamed._largest_dy_bound(reductions, inverse, shift, slope) >= true


def test_same_scale_reads_the_power_of_two_exponent():
    assert streamed._same_scale(1.0, 1.4)  # both round to 2⁰
    assert not streamed._same_scale(1.0, 1.5)  # 1.5 rounds to 2¹
    assert streamed._same_scale(0.0, 3.0)  # an all-zero gradient quantises alike with any scale


def test_stages_are_read_from_the_three_small_models():
    cnv = streamed.stages_of(set_mode(CNV(), "low_memory"))
    assert [s.pool_after for s in cnv] == [False, True, False, True] + [False] * 5
    assert [s.flatten for s in cnv] == [False] * 6 + [True, False, False]
    binarynet = streamed.stages_of(set_mode(BinaryNet(image_size=16), "low_memory"))
    assert [s.pool_before for s in binarynet] == [False, True] * 3 + [False] * 3
    assert len(streamed.stages_of(set_mode(BNNMLP(), "low_memory"))) == 5
    assert streamed.stages_of(BNNMLP()) is None  # torch's batch norm: the standard mode
    assert streamed.stages_of(set_mode(ResNetE18(image_size=32), "low_memory")) is None
    assert streamed.stages_of(nn.Sequential(nn.ReLU())) is None


def test_only_a_low_memory_step_with_bit_gradients_over_several_chunks_streams():
    x = torch.rand((100, 3, 32, 32))
    net = set_mode(CNV(), "low_memory").train()
    stages = streamed.can_stream(net, x)
    assert stages is not None and streamed.plan(stages, tuple(x.shape))
    mlp = set_mode(BNNMLP(), "low_memory").train()  # at batch 100 every tensor fits in one chunk
    mlp_stages = streamed.can_stream(mlp, torch.rand((100, 1, 28, 28)))
    assert mlp_stages is not None and not streamed.plan(mlp_stages, (100, 1, 28, 28))
    assert streamed.can_stream(set_mode(CNV(), "standard").train(), x) is None
    assert streamed.can_stream(net.eval(), x) is None
    assert (
        streamed.can_stream(set_mode(CNV(), "low_memory", bit_gradients=False).train(), x) is None
    )
    with torch.no_grad():
        assert streamed.can_stream(net.train(), x) is None


@pytest.mark.parametrize("conv_block", [700, 5_000, 40_000])
def test_large_convolutions_in_blocks_stay_bit_equal(conv_block, monkeypatch, count_streamed):
    """With ``CONV_BLOCK`` small, CNV's convolutions run a block of their weight at a time: the forward a block
    of output channels, the weight gradient summed block by block, its ``dY`` gathered where that takes less
    memory than the whole sum, else added to the whole sum chunk by chunk."""
    monkeypatch.setattr(streamed, "ROW_VALUES", 2_000)
    monkeypatch.setattr(streamed, "CONV_BLOCK", conv_block)
    made, blocks = [], []
    original_init, original_blocks = streamed._WeightGradient.__init__, streamed._conv_blocks

    def init(self, *args, **keywords):
        original_init(self, *args, **keywords)
        made.append(self)

    monkeypatch.setattr(streamed._WeightGradient, "__init__", init)
    monkeypatch.setattr(
        streamed, "_conv_blocks", lambda *a: blocks.append(1) or original_blocks(*a)
    )
    net, layered = _pair(MODELS["cnv"][0])
    x, y = _batch(net, MODELS["cnv"][1])
    logits, layered_logits = net(x), layered(x)
    assert count_streamed and blocks and torch.equal(logits, layered_logits)
    F.cross_entropy(logits, y).backward()
    F.cross_entropy(layered_logits, y).backward()
    _assert_same(_state(net)[0], _state(layered)[0])
    _assert_same(_state(net)[1], _state(layered)[1])
    large = [w for w in made if not w.dense and math.prod(w.w_shape) > conv_block]
    assert any(w.gathered for w in large)
    assert any(not w.gathered for w in large)
    # the gathered power-of-two dY are kept one byte a value
    assert all(isinstance(r[2], streamed._Codes) for w in large if w.gathered for r in w.rows)


def test_power_of_two_rows_are_kept_one_byte_a_value_and_anything_else_as_it_is():
    """``_Codes`` gives back a power-of-two ``dY``'s columns bit for bit; a value it could not give back exactly (NaN,
    a value between powers of two, −0, exponents 128 or more apart) keeps the rows as they are."""
    torch.manual_seed(0)
    dy = fn.po2_quantize(torch.randn(6, 40, 3, 3) * (torch.rand(6, 40, 3, 3) > 0.3))
    coded = streamed._Codes.of(dy)
    assert isinstance(coded, streamed._Codes) and coded.codes.dtype == torch.int8
    assert torch.equal(coded.columns(0, 40).view(torch.int32), dy.view(torch.int32))
    assert torch.equal(coded.columns(7, 9).view(torch.int32), dy[:, 7:16].view(torch.int32))
    for value in (float("nan"), float("inf"), 0.3, -0.0, 2.0**-140, 2.0**125):
        odd = dy.clone()
        odd[1, 2, 0, 1] = value
        assert streamed._Codes.of(odd) is odd
