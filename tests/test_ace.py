"""ACE/ACEv2 accounting: hand-computed single layers, published MAC totals, errors and the CLI."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from qatcore import cli
from qatcore.architectures import MobileNetV1, ResNet18, ResNet50
from qatcore.cost import ace, cost_models
from qatcore.cost.cost_models import ACE, FLOAT, ACEv2, Energy45nm, Operation, Sops
from qatcore.estimators.layers import QuantConv2d

torch.set_num_threads(1)


def kinds(report, layer=None):
    """{(kind, role): (count, bits)} of one layer (or all), to compare with hand counts."""
    return {
        (op.kind, op.role): (op.count, op.bits)
        for op in report.operations
        if layer in (None, op.layer)
    }


def test_conv_with_stride_padding_and_groups_by_hand():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    model = nn.Sequential(conv)
    report = ace.count(model, torch.zeros(1, 4, 9, 9), bits={"0": (3, 5)}, float_bits=32)
    # output 6×5×5; each output reads C_in/groups·k_h·k_w = 2·3·3 = 18 inputs
    macs = 6 * 5 * 5 * 18
    assert kinds(report) == {
        ("mac", "mac"): (macs, (3, 5)),
        ("mul", "rescale"): (150, (32, 32)),
        ("mul", "quantise"): (4 * 81, (32, 32)),
    }
    totals = report.totals
    assert totals["macs"] == 2700 and totals["ace"] == 2700 * 3 * 5
    assert totals["acev2"] == 2700 * 15 + (150 + 324) * 32 * 32


def test_depthwise_conv_with_bias_by_hand():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8))
    report = ace.count(
        model, torch.zeros(2, 8, 6, 6), elementwise_bits=8, float_bits=32, per_image=False
    )
    assert kinds(report) == {
        ("mac", "mac"): (2 * 8 * 36 * 9, (32, 32)),
        ("add", "bias"): (2 * 288, (8, 8)),
    }
    assert report.totals["acev2"] == 2 * 8 * 36 * 9 * 1024 + 2 * 288 * 8


def test_linear_by_hand_and_energy_from_the_45nm_table():
    report = ace.count(
        nn.Sequential(nn.Linear(10, 7, bias=False)),
        torch.zeros(3, 10),
        bits=(4, 4),
        float_bits=32,
        per_image=False,
    )
    assert report.totals["macs"] == 210 and report.totals["ace"] == 210 * 16
    per_mac = 0.002995 * 16 + 0.001042 * 4 + 0.003125 * 32  # 4×4 int mul + int32 accumulate (pJ)
    per_scale = 3.7  # each of the 21 re-scales and 30 input scalings is an fp32 multiplication
    assert report.totals["energy_pj"] == pytest.approx(210 * per_mac + (21 + 30) * per_scale)


@pytest.mark.parametrize(
    ("layer", "shape", "expected"),
    [
        (
            nn.BatchNorm2d(4),
            (2, 4, 3, 3),
            {("mul", "batch norm"): (72, (8, 8)), ("add", "batch norm"): (72, (8, 8))},
        ),
        (
            nn.PReLU(),
            (1, 3, 4, 4),
            {("compare", "activation"): (48, (8,)), ("mul", "activation"): (48, (8,) * 2)},
        ),
        (nn.ReLU(), (1, 3, 4, 4), {("compare", "activation"): (48, (8,))}),
        (nn.MaxPool2d(3, 2, 1), (1, 2, 8, 8), {("compare", "pooling"): (32 * 8, (8, 8))}),
        (
            nn.AvgPool2d(2),
            (1, 2, 4, 4),
            {("add", "pooling"): (24, (8, 8)), ("mul", "pooling"): (8, (8, 8))},
        ),
        (
            nn.AdaptiveAvgPool2d(1),
            (1, 3, 5, 5),
            {("add", "pooling"): (72, (8, 8)), ("mul", "pooling"): (3, (8, 8))},
        ),
        # 5 → 3 adaptive windows span 2, 3, 2 rows (and columns): 7·7 = 49 reads per channel, 9 outputs
        (
            nn.AdaptiveAvgPool2d(3),
            (1, 1, 5, 5),
            {("add", "pooling"): (40, (8, 8)), ("mul", "pooling"): (9, (8, 8))},
        ),
        (
            nn.Softmax(dim=1),
            (2, 5),
            {
                ("compare", "softmax"): (10, (8,)),
                ("add", "softmax"): (20, (8, 8)),
                ("exp", "softmax"): (10, (8,)),
                ("div", "softmax"): (10, (8, 8)),
            },
        ),
    ],
)
def test_elementwise_layers_by_hand(layer, shape, expected):
    report = ace.count(
        nn.Sequential(layer), torch.randn(*shape), elementwise_bits=8, per_image=False
    )
    assert kinds(report) == expected
    assert report.totals["ace"] == 0  # ACE sees none of them
    assert report.elementwise_share() == 1.0


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)

    def forward(self, x):
        return self.conv(x) + x


@pytest.mark.parametrize("method", ["fx", "hooks"])
def test_residual_addition_by_hand(method):
    report = ace.count(Residual(), torch.zeros(1, 2, 3, 3), elementwise_bits=6, method=method)
    assert report.method == method
    assert kinds(report, "add") == {("add", "residual add"): (18, (6, 6))}
    assert kinds(report, "conv") == {
        ("mac", "mac"): (36, (16, 16))
    }  # unquantised: bfloat16, as PokeBNN


# Published multiply-accumulate counts for one 224×224 image, fc layer included:
#  ResNet-18 1.814e9 and ResNet-50 4.089e9 (torchvision's model cards, "GFLOPS" 1.81 / 4.09, which
#  count MACs; ResNet-50 there is the "v1.5" layout built here). MobileNet-V1: Howard et al. 2017,
#  Table 6 (width multiplier: 569, 325, 149, 41 million Mult-Adds) and Table 7 (resolution 192, 160,
#  128: 418, 290, 186 million).
@pytest.mark.parametrize(
    ("build", "published"),
    [
        (ResNet18, 1.814e9),
        (ResNet50, 4.089e9),
        (lambda: MobileNetV1(1.0, 224), 569e6),
        (lambda: MobileNetV1(0.75, 224), 325e6),
        (lambda: MobileNetV1(0.5, 224), 149e6),
        (lambda: MobileNetV1(0.25, 224), 41e6),
        (lambda: MobileNetV1(1.0, 192), 418e6),
        (lambda: MobileNetV1(1.0, 160), 290e6),
        (lambda: MobileNetV1(1.0, 128), 186e6),
    ],
)
def test_mac_totals_match_published_figures_within_one_percent(build, published):
    model = build()
    report = ace.count(model, model.example_input(), method="hooks")
    assert report.totals["macs"] == pytest.approx(published, rel=0.01)
    assert not report.unknown


@pytest.mark.parametrize("build", [ResNet18, ResNet50, MobileNetV1])
def test_fx_and_hooks_count_the_same(build):
    model = build(width_multiplier=0.25, image_size=32, num_classes=10)
    by_fx = ace.count(model, model.example_input(), bits=(4, 4), method="fx")
    by_hooks = ace.count(model, model.example_input(), bits=(4, 4), method="hooks")
    assert by_fx.totals == by_hooks.totals and by_fx.layers() == by_hooks.layers()


@examples(25)
@given(
    c_in=st.integers(1, 4),
    c_out_per_group=st.integers(1, 3),
    groups=st.integers(1, 3),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    side=st.integers(4, 9),
    w_bits=st.integers(1, 8),
    a_bits=st.integers(1, 8),
)
def test_conv_macs_agree_with_torch_flop_counter_and_ace_is_macs_times_bits(
    c_in, c_out_per_group, groups, kernel, stride, padding, side, w_bits, a_bits
):
    conv = nn.Conv2d(
        c_in * groups, c_out_per_group * groups, kernel, stride, padding, groups=groups
    )
    x = torch.zeros(2, c_in * groups, side + kernel, side + kernel)
    with FlopCounterMode(display=False) as flops:
        conv(x)
    report = ace.count(nn.Sequential(conv), x, bits=(w_bits, a_bits), per_image=False)
    assert 2 * report.totals["macs"] == flops.get_total_flops()  # torch counts a MAC as 2 FLOPs
    assert report.totals["ace"] == report.totals["macs"] * w_bits * a_bits
    assert report.totals["acev2"] > report.totals["ace"]


def test_precision_from_override_then_attributes_then_quantized_layer_then_float():
    binary = nn.Conv2d(1, 2, 3, bias=False)
    binary.weight_bits, binary.input_bits = 1, 1
    model = nn.Sequential(
        QuantConv2d(1, 1, 3, bits=3, bias=False), binary, nn.Conv2d(2, 2, 1, bias=False)
    )
    x = torch.zeros(1, 1, 8, 8)
    bits = {op.layer: op.bits for op in ace.count(model, x).operations if op.kind == "mac"}
    assert bits == {"0": (3, 16), "1": (1, 1), "2": (16, 16)}
    bits = {
        op.layer: op.bits
        for op in ace.count(model, x, bits={"1": (2, 8)}, float_bits=32).operations
        if op.kind == "mac"
    }
    assert bits == {"0": (3, 32), "1": (2, 8), "2": (32, 32)}
    assert {op.bits for op in ace.count(model, x, bits=(5, 6)).operations if op.kind == "mac"} == {
        (5, 6)
    }


class Costed(nn.Module):
    """Costed by its own hook: one 2×3-bit multiplication per output, its conv never traced."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.inner(x)

    def ace_operations(self, inputs, output, name):
        return [Operation(name, "mul", output.numel(), (2, 3), "custom")]


@pytest.mark.parametrize("method", ["fx", "hooks"])
def test_the_ace_operations_hook_replaces_tracing(method):
    report = ace.count(nn.Sequential(Costed(), nn.ReLU()), torch.zeros(1, 1, 5, 5), method=method)
    assert [(op.layer, op.kind, op.count, op.bits) for op in report.operations][0] == (
        "0",
        "mul",
        9,
        (2, 3),
    )
    assert report.totals["macs"] == 0 and "0.inner" not in report.layer_types


class Unusual(nn.Module):
    def forward(self, x):
        return torch.erf(nn.functional.gelu(x)) + 1


@pytest.mark.parametrize("method", ["fx", "hooks"])
def test_operations_it_cannot_cost_are_reported_by_name(method):
    model = nn.Sequential(nn.Linear(3, 3), nn.GELU(), Unusual())
    report = ace.count(model, torch.zeros(2, 3), method=method, float_bits=32, per_image=False)
    assert report.unknown == ["1 (GELU)", "2.gelu (gelu)", "2.erf (erf)"]
    assert "Not costed: 1 (GELU), 2.gelu (gelu), 2.erf (erf)" in report.to_markdown()
    assert kinds(report, "2.add") == {("add", "add"): (6, (32, 32))}


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, the hook driver can."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() >= 0 else x


def test_untraceable_models_fall_back_to_hooks():
    report = ace.count(Branchy(), torch.zeros(1, 4))
    assert report.method == "hooks" and report.totals["macs"] == 16
    with pytest.raises(Exception):  # noqa: B017 — whatever torch.fx raises
        ace.count(Branchy(), torch.zeros(1, 4), method="fx")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(example_input=None), "example_input must be a torch.Tensor"),
        (
            dict(bits={"nope": (4, 4)}),
            r"bits names no conv/linear/matmul layer: \['nope'\]; layers that take bits: \['0', '2'\]",
        ),
        (dict(bits={"1": (4, 4)}), r"bits names no conv/linear/matmul layer: \['1'\]"),
        (
            dict(bits=(4, 0)),
            r"bits must be a pair \(w_bits, a_bits\), each an int from 1 to 16, or 32",
        ),
        (dict(bits=(24, 8)), r"bits must be a pair \(w_bits, a_bits\), each an int from 1 to 16"),
        (dict(elementwise_bits=17), "elementwise_bits must be an int from 1 to 16, or 32 or None"),
        (dict(bits={"0": 4}), r"bits\['0'\] must be a pair"),
        (dict(elementwise_bits=0), "elementwise_bits must be an int from 1 to 16, or 32 or None"),
        (
            dict(cost_model="flops"),
            r"cost_model must be one of \['ace', 'acev2', 'energy_pj', 'sops'\]",
        ),
        (dict(method="jit"), "method must be one of"),
        (dict(float_bits=8), r"float_bits must be one of \(16, 32\)"),
    ],
)
def test_bad_arguments_get_a_clear_error(kwargs, message):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    arguments = dict(example_input=torch.zeros(1, 3)) | kwargs
    with pytest.raises(ValueError, match=message):
        ace.count(model, **arguments)


def test_a_model_without_example_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="Sequential has no example_input"):
        ace.example_input(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        ace.count("resnet18", torch.zeros(1))


def test_report_tables_add_up_and_serialise():
    model = MobileNetV1(0.25, 32, num_classes=10)
    model.train()
    report = ace.count(model, model.example_input(2), bits=(4, 4), elementwise_bits=8)
    assert model.training and all(m.training for m in model.modules())  # mode restored
    totals, data = report.totals, json.loads(json.dumps(report.to_dict()))
    for key in ("macs", "ace", "acev2", "energy_pj"):
        assert sum(row[key] for row in data["layers"]) == pytest.approx(totals[key])
        assert sum(row[key] for row in data["kinds"].values()) == pytest.approx(totals[key])
        assert sum(row[key] for row in data["roles"].values()) == pytest.approx(totals[key])
    assert set(data["totals"]) >= {"macs", "ace", "acev2", "energy_pj"} and data["unknown"] == []
    assert report.total == totals["acev2"] and 0 < report.elementwise_share() < 1
    assert report.to_markdown().count("\n") == len(report.layers()) + len(data["kinds"]) + 5


def test_quantising_elementwise_operations_lowers_acev2_but_not_ace():
    model = MobileNetV1(0.25, 32, num_classes=10)
    floats = ace.count(model, model.example_input(), bits=(4, 4))
    fours = ace.count(model, model.example_input(), bits=(4, 4), elementwise_bits=4)
    assert floats.totals["ace"] == fours.totals["ace"]
    assert (
        fours.totals["acev2"] < floats.totals["acev2"]
        and fours.elementwise_share() < floats.elementwise_share()
    )


def test_cost_models_by_hand_and_pluggable():
    mac, add = Operation("l", "mac", 10, (2, 3)), Operation("l", "add", 4, (8, 5))
    fadd = Operation("l", "add", 4, (FLOAT, 8))
    assert (ACE().cost(mac), ACE().cost(add), Sops().cost(mac), Sops().cost(add)) == (
        60.0,
        0.0,
        0.0,
        4.0,
    )
    assert (ACEv2().cost(mac), ACEv2().cost(add), ACEv2(accumulator_bits=16).cost(mac)) == (
        60.0,
        32.0,
        220.0,
    )
    assert Energy45nm().cost(fadd.resolved(32)) == pytest.approx(4 * 0.9) and Energy45nm().cost(
        add
    ) == pytest.approx(4 * 0.025)
    assert Energy45nm().cost(fadd.resolved(16)) == pytest.approx(4 * 0.4)  # fp16 add, 45 nm
    assert ACEv2().cost(fadd.resolved(16)) == 4 * 16 and ACEv2().cost(fadd.resolved(32)) == 4 * 32
    assert Energy45nm().cost(Operation("l", "shift", 1, (FLOAT,)).resolved(32)) == pytest.approx(
        0.9
    )
    assert Energy45nm().cost(Operation("l", "shift", 1, (32,))) == pytest.approx(
        0.1
    )  # an int32 shift

    class Count:
        name = "operations_counted"

        def cost(self, op):
            return float(op.count)

    report = ace.count(nn.Sequential(nn.Linear(2, 2)), torch.zeros(1, 2), cost_model=Count())
    assert report.total == report.totals["operations"] == 6
    with pytest.raises(TypeError, match="cost_model must be one of"):
        cost_models.get(42)
    with pytest.raises(ValueError, match="kind must be one of"):
        Operation("l", "fma", 1, (8, 8))
    with pytest.raises(ValueError, match="bits must be 1 to 32 operand widths"):
        Operation("l", "mul", 1, (64, 8))
    with pytest.raises(ValueError, match=r"float_bits must be one of \(16, 32\)"):
        fadd.resolved(8)


def test_cli_prints_json_with_totals_and_layers(capsys):
    assert cli.main(["ace", "--model", "mnist_cnn", "--bits", "4", "--a-bits", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["totals"]) >= {"macs", "ace", "acev2", "energy_pj"}
    # MNIST CNN on 28×28: conv 32·28²·9 + conv 64·14²·32·9 + fc 3136·256 + fc 256·10 MACs
    assert data["totals"]["macs"] == 32 * 784 * 9 + 64 * 196 * 288 + 3136 * 256 + 2560
    assert data["totals"]["ace"] == 16 * data["totals"]["macs"]
    assert [row["layer"] for row in data["layers"]][:2] == ["0", "1"]


def test_cli_table_and_errors(capsys):
    assert cli.main(["ace", "--model", "resnet18"]) == 0
    assert (
        "resnet18 (per image, float operands at 16 bits): 1,814,073,344 MACs"
        in capsys.readouterr().out
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ace", "--model", "resnet18", "--bits", "4"])
    assert exit_info.value.code == 2
    assert "w_bits and a_bits must be given together" in capsys.readouterr().err


def test_energy_of_a_float_mac_is_a_float_multiply_and_an_fp32_add():
    model, x = nn.Sequential(nn.Linear(4, 1, bias=False)), torch.zeros(1, 4)
    report = ace.count(model, x, cost_model="energy", float_bits=32)
    assert report.total == pytest.approx(4 * (3.7 + 0.9)) and math.isclose(
        report.totals["ace"], 4 * 1024
    )
    report = ace.count(
        model, x, cost_model="energy"
    )  # bfloat16 operands: fp16 multiply, fp32 accumulation
    assert report.total == pytest.approx(4 * (1.1 + 0.9)) and math.isclose(
        report.totals["ace"], 4 * 256
    )


class Recurrent(nn.Module):
    """A model of layers ace cannot cost: an LSTM and an einsum."""

    input_shape = (5, 8)

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x):
        out, _ = self.lstm(x)
        return torch.einsum("bti,btj->bij", out, out)


def recurrent() -> nn.Module:
    return Recurrent()


def test_the_cli_refuses_a_model_with_uncosted_layers_naming_them(capsys):
    from qatcore.cli import main

    assert main(["ace", "--model", "test_ace:recurrent"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "lstm" in captured.err and "einsum" in captured.err
    assert "--allow-uncosted" in captured.err


def test_with_allow_uncosted_the_headline_says_partial_and_never_0_macs(capsys):
    from qatcore.cli import main

    assert main(["ace", "--model", "test_ace:recurrent", "--allow-uncosted"]) == 0
    headline = capsys.readouterr().out.splitlines()[0]
    assert headline.startswith("PARTIAL COUNT, 2 layer(s) not costed") and "lstm" in headline
    assert "no MACs counted" in headline and " 0 MACs" not in headline


def test_the_cli_refuses_integer_widths_above_16_bits_as_pokebnn_does(capsys):
    from qatcore.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["ace", "--model", "mnist_cnn", "--bits", "24", "--a-bits", "8"])
    assert exited.value.code == 2 and "1 to 16" in capsys.readouterr().err
    assert main(["ace", "--model", "mnist_cnn", "--bits", "16", "--a-bits", "16", "--json"]) == 0
