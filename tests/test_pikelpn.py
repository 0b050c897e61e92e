"""PikeLPN's techniques: QuantNorm, Double Quantization, DHQ, the network, its cost and its widget."""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.figure import Figure
from strategies import examples
from torch import nn

from qatcore import data, zoo
from qatcore.cost import ace
from qatcore.cost.pikelpn import (
    LADDER,
    PikeLPN,
    PikeLPNConfig,
    cost,
    default_config,
    distribution_table,
    ladder_configs,
    ladder_table,
    paired_differences,
    seed_study,
    train_pikelpn,
)
from qatcore.cost.pikelpn_layers import (
    ActQuant,
    PikeConv2d,
    QuantNorm,
    WeightQuantizer,
    double_quantize_scale,
    is_power_of_two,
)
from qatcore.cost.plots import plot_pareto
from qatcore.cost.widgets import technique_explorer, technique_view
from qatcore.estimators.train import TrainConfig
from qatcore.optimizers import OptimizerConfig

scales = st.lists(st.floats(1e-6, 1e3), min_size=1, max_size=20).map(
    lambda xs: torch.tensor(xs, dtype=torch.float64)
)


# --- Double Quantization -------------------------------------------------------------------------


@given(s=scales)
def test_pow2_scales_are_powers_of_two_just_above(s):
    q = double_quantize_scale(s, "pow2")
    assert torch.all(is_power_of_two(q))
    assert torch.all(q >= s) and torch.all(q < 2 * s)


@given(s=scales, bits=st.integers(1, 8))
def test_int_scales_are_low_bit_integers_times_one_shared_power_of_two(s, bits):
    q = double_quantize_scale(s, "int", scale_bits=bits)
    shared = torch.exp2(torch.ceil(torch.log2(s.max() / (2**bits - 1))))
    codes = q / shared
    assert bool(is_power_of_two(shared))
    assert torch.equal(codes, torch.round(codes))
    assert codes.min() >= 1 and codes.max() <= 2**bits - 1


def test_double_quantization_refuses_bad_input():
    with pytest.raises(ValueError, match="fmt must be one of"):
        double_quantize_scale(torch.ones(2), "log")
    with pytest.raises(ValueError, match="scale must be positive"):
        double_quantize_scale(torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("scheme", ["tensor-max", "channel-max", "channel-std"])
def test_double_quantized_weights_are_odd_multiples_of_a_power_of_two(scheme):
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    quantizer = WeightQuantizer(4, scheme, double_quant=True)
    scale = quantizer.scale(w)
    codes = quantizer(w) / scale
    assert torch.all(is_power_of_two(scale))
    assert torch.allclose(codes, torch.round(codes), atol=1e-4)  # float32 rounding of m·Q(w/m)
    assert torch.all(torch.round(codes).remainder(2) == 1) and codes.abs().max() <= 2**4 - 1 + 1e-4


# --- DHQ: depthwise and pointwise get their own schemes ------------------------------------------


def test_dhq_gives_depthwise_and_pointwise_kernels_their_own_schemes():
    on = PikeLPN(default_config(dhq=True)).separable_convs()
    off = PikeLPN(default_config()).separable_convs()
    assert {c.weight_quantizer.scheme for c in on.values() if c.depthwise} == {"channel-max"}
    assert {c.weight_quantizer.scheme for c in on.values() if not c.depthwise} == {"channel-std"}
    assert {c.weight_quantizer.scheme for c in off.values()} == {"tensor-max"}


def test_per_channel_range_keeps_a_small_depthwise_channel_alive():
    w = torch.stack([torch.linspace(-1, 1, 9), torch.linspace(-0.01, 0.01, 9)]).reshape(2, 1, 3, 3)
    per_tensor = WeightQuantizer(4, "tensor-max")(w)
    per_channel = WeightQuantizer(4, "channel-max")(w)
    assert per_tensor[1].unique().numel() <= 2  # the small channel collapses to ±Δ/2
    assert per_channel[1].unique().numel() == 9  # its own range: every weight keeps a level
    assert torch.allclose(per_channel[1].abs().max(), torch.tensor(0.01))


def test_clipped_range_of_a_pointwise_channel_ignores_an_outlier():
    torch.manual_seed(0)
    w = torch.randn(1, 256, 1, 1) * 0.1
    w[0, 0] = 5.0
    clipped = WeightQuantizer(4, "channel-std", clip_sigmas=3.0)
    assert clipped.weight_range(w).item() < 5.0
    assert clipped(w).abs().max() < 5.0 <= WeightQuantizer(4, "channel-max")(w).abs().max()


# --- QuantNorm -----------------------------------------------------------------------------------


@examples(40)
@given(seed=st.integers(0, 10_000), norm_bits=st.integers(2, 10), bias_bits=st.integers(2, 16))
def test_quantnorm_in_eval_is_the_folded_batch_norm_up_to_its_quantisation_error(
    seed, norm_bits, bias_bits
):
    generator = torch.Generator().manual_seed(seed)
    channels = 5
    bn = nn.BatchNorm2d(channels).eval()
    qn = QuantNorm(channels, norm_bits, bias_bits).eval()
    with torch.no_grad():
        for module in (bn, qn):
            torch.manual_seed(seed)
            module.weight.copy_(torch.randn(channels, generator=generator) + 1)
            module.bias.copy_(torch.randn(channels, generator=generator))
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) * 3 + 0.1)
            generator.manual_seed(seed)
    x = torch.randn(3, channels, 4, 4, generator=generator) * 3
    with torch.no_grad():
        error = (qn(x) - bn(x)).abs()
        bound = qn.quantization_error_bound(x)
    assert torch.all(error <= bound * (1 + 1e-5) + 1e-6)


def test_quantnorm_quantises_its_folded_scale_and_bias_on_power_of_two_grids():
    torch.manual_seed(0)
    qn = QuantNorm(16, norm_bits=3, bias_bits=4).eval()
    with torch.no_grad():
        qn.weight.uniform_(0.5, 2)
        qn.bias.normal_()
        qn.running_var.uniform_(0.2, 2)
    a, b = qn.quantized_affine(qn.running_mean, qn.running_var)
    a_float, b_float = qn.folded(qn.running_mean, qn.running_var)
    assert a.unique().numel() <= 2**3 and b.unique().numel() <= 2**4
    assert not torch.allclose(a, a_float)  # 3 bits: the error is real, so the test above can fail
    m_a, _ = qn.ranges(a_float, b_float)
    assert bool(is_power_of_two(m_a / (2**3 - 1)))


def test_quantnorm_trains_like_batch_norm_on_batch_statistics():
    qn = QuantNorm(3, norm_bits=16, bias_bits=16)
    x = torch.randn(8, 3, 5, 5) * 4 + 2
    y = qn(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-2)
    assert torch.allclose(qn.running_mean, 0.1 * x.mean(dim=(0, 2, 3)))
    with pytest.raises(ValueError, match="x must be N×3×H×W"):
        qn(torch.randn(2, 4, 3, 3))


# --- activation quantiser ------------------------------------------------------------------------


@pytest.mark.parametrize("double_quant", [False, True])
def test_activations_land_on_the_unsigned_grid(double_quant):
    act = ActQuant(4, alpha=3.0, double_quant=double_quant)
    with torch.no_grad():
        y = act(torch.linspace(-2, 6, 101))
    step = act.step()
    assert torch.allclose(y / step, torch.round(y / step), atol=1e-4)
    assert y.min() == 0 and y.max() == pytest.approx(15 * float(step))
    assert bool(is_power_of_two(step)) == double_quant


# --- the network ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LADDER))
def test_gradients_reach_every_trainable_parameter(name):
    torch.manual_seed(0)
    model = PikeLPN(ladder_configs(default_config(alpha=1.0))[name]).train()
    x = torch.rand(16, 1, 8, 8)  # with α = 1 some pre-activations lie above every clip
    nn.functional.cross_entropy(model(x), torch.arange(16) % 10).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_the_zoo_builds_it_with_no_arguments_and_ace_costs_every_operation():
    model = zoo.build("pikelpn_mobilenet")
    report = ace.count(model, torch.zeros(1, *zoo.input_shape("pikelpn_mobilenet", model)))
    assert report.unknown == [] and report.totals["macs"] > 0


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="bits must be None"):
        PikeLPNConfig(bits=0)
    with pytest.raises(ValueError, match="need a quantised model"):
        PikeLPNConfig(bits=None, quantnorm=True)
    with pytest.raises(ValueError, match="scale_format must be one of"):
        PikeLPNConfig(scale_format="fp8")
    with pytest.raises(ValueError, match="widths must have one entry more"):
        PikeLPNConfig(widths=(8, 8))
    with pytest.raises(TypeError, match="config must be a PikeLPNConfig"):
        PikeLPN({"bits": 4})
    with pytest.raises(ValueError, match="scheme must be one of"):
        WeightQuantizer(4, "median")


def test_fashion_mnist_sized_model_runs():
    model = PikeLPN(default_config(28, quantnorm=True, double_quant=True, dhq=True)).eval()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_a_short_run_learns():
    small = data.subset(data.load_digits(), train=256, test=100)
    config = TrainConfig(OptimizerConfig("adam", lr=1e-2), batch_size=64, epochs=3)
    model, run = train_pikelpn(
        ladder_configs()["+ DHQ (PikeLPN-style)"], small, config, progress=False
    )
    assert sum(run.losses[-4:]) < sum(run.losses[:4])
    rows = distribution_table(model)
    assert [r["kind"] for r in rows] == ["depthwise", "pointwise"] * 3


def test_a_seed_study_gives_one_accuracy_per_rung_and_seed():
    small = data.subset(data.load_digits(), train=128, test=50)
    config = TrainConfig(OptimizerConfig("adam", lr=1e-2), batch_size=64, epochs=1)
    configs = {name: c for name, c in list(ladder_configs().items())[1:4]}
    accuracies = seed_study(small, config, configs, seeds=[0, 1])
    assert list(accuracies) == list(configs) and all(len(v) == 2 for v in accuracies.values())
    assert all(0 <= a <= 1 and a * 50 == round(a * 50) for v in accuracies.values() for a in v)


def test_paired_differences_are_seed_by_seed_and_in_points():
    accuracies = {"float": [0.9, 0.9, 0.9], "W4A4": [0.80, 0.90, 0.85], "+ QN": [0.82, 0.91, 0.85]}
    steps = paired_differences(accuracies)
    assert list(steps) == ["+ QN"]  # nothing is compared with the float rung
    assert steps["+ QN"].mean == pytest.approx(1.0) and steps["+ QN"].sd == pytest.approx(1.0)
    with pytest.raises(ValueError, match="the same number of seeds for every rung"):
        paired_differences({"a": [0.1], "b": [0.1, 0.2]})
    costs = {name: {"acev2": 1.0} for name in accuracies}
    rows = ladder_table(accuracies, costs)
    assert (
        rows[1]["test_accuracy"] == pytest.approx(0.85)
        and rows[1]["step"] is None
        and rows[2]["seeds"] == 3
    )


def test_pareto_figure_labels_acev2_and_draws_what_its_legend_shows():
    rows = [
        {"model": "a", "acev2": 10.0, "test_accuracy": 0.9, "test_accuracy_sd": 0.01},
        {"model": "b", "acev2": 100.0, "test_accuracy": 0.95, "test_accuracy_sd": 0.01},
        {"model": "c", "acev2": 50.0, "test_accuracy": 0.8, "test_accuracy_sd": 0.02},
    ]
    axis = plot_pareto(rows).axes[0]
    assert axis.get_xlabel() == "ACEv2 per image"
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["Pareto front"]
    dashed = [line for line in axis.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [
        10.0,
        100.0,
    ]  # a, then b; c is dominated
    single = plot_pareto([{**rows[0], "test_accuracy": 0.99}, rows[1]]).axes[0]
    assert "one model" in single.get_legend().get_texts()[0].get_text()
    assert not [line for line in single.get_lines() if line.get_linestyle() == "--"]


# --- cost ----------------------------------------------------------------------------------------


def test_without_double_quantization_a_conv_costs_what_ace_counts_for_any_quantised_conv():
    conv = PikeConv2d(8, 16, 3, padding=1, weight_quantizer=WeightQuantizer(4), input_bits=4)
    plain = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    x = torch.zeros(1, 8, 6, 6)
    ours, theirs = ace.count(conv, x).totals, ace.count(plain, x, bits=(4, 4)).totals
    assert ours["acev2"] == theirs["acev2"] and ours["macs"] == theirs["macs"]


def test_each_technique_lowers_acev2_or_leaves_it():
    for float_bits, cut in (
        (32, 2),
        (16, 1.5),
    ):  # float32 element-wise ops, then PokeBNN's bfloat16
        totals = [cost(c, float_bits=float_bits).totals["acev2"] for c in ladder_configs().values()]
        quantised = totals[1:]
        assert all(later <= earlier for earlier, later in itertools.pairwise(quantised))
        assert quantised[-1] < quantised[0] / cut


def test_double_quantization_turns_float_rescales_into_shifts():
    def kinds(report, role):
        return {op.kind for op in report.operations if op.role == role}

    off, on = cost(default_config()), cost(default_config(double_quant=True))
    assert kinds(off, "rescale") == {"mul"} and kinds(on, "rescale") == {"shift"}
    assert kinds(on, "quantise") == {"shift"}
    low_bit = cost(default_config(double_quant=True, scale_format="int"))
    assert kinds(low_bit, "rescale") == {"mul", "shift"}


# --- widget --------------------------------------------------------------------------------------


@pytest.mark.parametrize("switches", list(itertools.product([False, True], repeat=3)))
def test_technique_view_at_every_setting(switches):
    text, figure = technique_view(*switches)
    assert isinstance(figure, Figure) and "ACEv2" in text
    assert ("QuantNorm" in text) == switches[0] and ("DHQ" in text) == switches[2]


def test_explorer_redraws_when_a_box_is_ticked():
    box = technique_explorer()
    checks, label, _ = box.children
    before = label.value
    checks.children[1].value = True
    assert label.value != before and "DQ" in label.value
