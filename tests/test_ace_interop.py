"""Models from other quantisation libraries, costed with the real library: Brevitas (and torchao).

These run whenever the ``interop`` extra is installed (``pip install -e '.[interop]'``)."""

import warnings

import pytest
import torch
from torch import nn

from qatcore.cost import ace

qnn = pytest.importorskip("brevitas.nn")

torch.set_num_threads(1)


def brevitas_cnn(bits: int) -> nn.Module:
    """Input quantiser → 3×3 conv (1 → 4 channels) → quantised ReLU → flatten → linear (144 → 10)."""
    return nn.Sequential(
        qnn.QuantIdentity(bit_width=bits),
        qnn.QuantConv2d(1, 4, 3, weight_bit_width=bits, bias=False),
        qnn.QuantReLU(bit_width=bits),
        nn.Flatten(),
        qnn.QuantLinear(4 * 6 * 6, 10, weight_bit_width=bits, bias=False),
    )


def by_layer(report):
    """{(layer, kind, role): (count, bits)}, counts of the same key summed."""
    found = {}
    for op in report.operations:
        count, _ = found.get((op.layer, op.kind, op.role), (0, op.bits))
        found[(op.layer, op.kind, op.role)] = (count + op.count, op.bits)
    return found


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("method", ["auto", "hooks"])
def test_a_brevitas_cnn_is_costed_at_its_bit_widths(bits, method):
    model = brevitas_cnn(bits)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing here is costed at float width
        report = ace.count(model, torch.zeros(1, 1, 8, 8), method=method)
    b, f = (bits, bits), (16, 16)
    # by hand: the input quantiser clips (2 compares) and scales (1 multiply) each of 64 pixels; the
    # conv does 4·6·6 = 144 outputs × 9 MACs and re-scales each output; the ReLU quantiser clips and
    # scales its 144 outputs; the linear layer does 144·10 MACs and re-scales its 10 outputs. Neither
    # MAC layer pays a second "quantise" multiply: its input arrives on the quantiser's grid.
    assert by_layer(report) == {
        ("0", "compare", "quantise"): (128, (16,)),
        ("0", "mul", "quantise"): (64, f),
        ("1", "mac", "mac"): (1296, b),
        ("1", "mul", "rescale"): (144, f),
        ("2", "compare", "quantise"): (288, (16,)),
        ("2", "mul", "quantise"): (144, f),
        ("4", "mac", "mac"): (1440, b),
        ("4", "mul", "rescale"): (10, f),
    }
    totals = report.totals
    assert totals["macs"] == 2736 and totals["ace"] == 2736 * bits * bits
    assert totals["sops"] == 128 + 64 + 144 + 288 + 144 + 10
    assert totals["acev2"] == totals["ace"] + 256 * (64 + 144 + 144 + 10) + 16 * (128 + 288)
    assert report.unknown == []


def test_brevitas_quantisers_of_the_layer_itself_and_disabled_ones():
    from brevitas.quant import Int8ActPerTensorFloat

    conv = qnn.QuantConv2d(
        1,
        2,
        3,
        weight_bit_width=4,
        input_quant=Int8ActPerTensorFloat,
        input_bit_width=3,
        output_quant=Int8ActPerTensorFloat,
        output_bit_width=5,
        bias=False,
    )
    float_weights = qnn.QuantConv2d(2, 2, 1, weight_quant=None, bias=False)
    report = ace.count(nn.Sequential(conv, float_weights), torch.zeros(1, 1, 5, 5))
    layers = by_layer(report)
    assert layers[("0", "mac", "mac")] == (18 * 9, (4, 3))
    assert layers[("0", "mul", "quantise")] == (
        25 + 18,
        (16, 16),
    )  # its own input and output quantisers
    assert layers[("0", "compare", "quantise")] == (36, (16,))  # its own output quantiser: 18 clips
    assert layers[("1", "mac", "mac")] == (
        18 * 2,
        (16, 5),
    )  # float weights, input on the 5-bit grid


def test_without_the_reader_a_brevitas_conv_would_count_as_float():
    """What the issue found: before, a QuantConv2d at 4 bits was priced like a float conv."""
    model = brevitas_cnn(4)
    quantised = ace.count(model, torch.zeros(1, 1, 8, 8)).totals["ace"]
    as_float = ace.count(model, torch.zeros(1, 1, 8, 8), bits=(None, None)).totals["ace"]
    assert as_float == 2736 * 256 and quantised == 2736 * 16


def test_a_torchao_fake_quantized_linear_is_costed_at_its_dtypes():
    qat = pytest.importorskip("torchao.quantization.qat")
    linear = qat.FakeQuantizedLinear(
        16,
        4,
        bias=False,
        activation_config=qat.IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False),
        weight_config=qat.IntxFakeQuantizeConfig(torch.int4, group_size=8),
    )
    report = ace.count(nn.Sequential(linear), torch.zeros(2, 16))
    assert by_layer(report)[("0", "mac", "mac")] == (64, (4, 8))
    weight_only = qat.FakeQuantizedLinear(
        16, 4, bias=False, weight_config=qat.IntxFakeQuantizeConfig(torch.int4, group_size=8)
    )
    assert by_layer(ace.count(nn.Sequential(weight_only), torch.zeros(1, 16)))[
        ("0", "mac", "mac")
    ] == (64, (4, 16))


@pytest.mark.parametrize(
    ("config", "a_bits"),
    [("Int8WeightOnlyConfig", None), ("Int8DynamicActivationInt8WeightConfig", 8)],
)
def test_torchao_post_training_int8_weights_are_costed_at_8_bits(config, a_bits):
    quantization = pytest.importorskip("torchao.quantization")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    float_report = ace.count(model, torch.zeros(1, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_(model, getattr(quantization, config)())
    assert type(model[0].weight).__module__.startswith("torchao")  # Int8Tensor, not a float weight
    report = ace.count(model, torch.zeros(1, 64))
    macs = {(op.layer, op.bits) for op in report.operations if op.kind == "mac"}
    assert macs == {("0", (8, a_bits or 16)), ("2", (8, a_bits or 16))}  # float: bfloat16
    assert (
        report.unknown == []
        and report.totals["macs"] == float_report.totals["macs"] == 64 * 32 + 32 * 10
    )
    # float 16 × 16 per MAC before; 8 × 16 (weight-only) or 8 × 8 after
    assert report.totals["ace"] == float_report.totals["ace"] * 8 * (a_bits or 16) / 256


def test_a_torchao_weight_of_unreadable_width_is_refused_not_costed_as_float():
    from qatcore.cost import foreign

    class Opaque:  # a torchao tensor subclass with neither qdata nor quant_min/quant_max
        pass

    Opaque.__module__ = "torchao.quantization.somewhere"
    with pytest.raises(ValueError, match="cannot read"):
        foreign.torchao_tensor_bits(Opaque(), "layer '0'")
