"""ACE as PokeBNN counts it (google/aqt, aqt/jax_legacy/jax/imagenet/pokebnn.py ``size_stats``):
per image, an unquantised operand at 16 bits (bfloat16), element-wise work as unweighted sops."""

import json
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples
from torch import nn

from qatcore import cli
from qatcore.architectures import MobileNetV1, ResNet18
from qatcore.cost import ace

torch.set_num_threads(1)


def tiny_factory() -> nn.Module:
    """A user's model for ``qatcore ace --model test_ace_conventions:tiny_factory``."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )
    model.input_shape = (1, 6, 6)
    return model


def test_resnet18_all_float_at_batch_1_is_macs_times_16_times_16():
    model = ResNet18()
    report = ace.count(model, model.example_input(1))
    totals = report.totals
    assert totals["macs"] == 1_814_073_344 and totals["ace"] == totals["macs"] * 16 * 16
    assert (
        ace.count(model, model.example_input(1), float_bits=32).totals["ace"]
        == totals["macs"] * 32 * 32
    )
    twice = ace.count(model, model.example_input(2)).totals
    assert twice == totals  # per image, whatever the batch
    assert (
        ace.count(model, model.example_input(2), per_image=False).totals["ace"] == 2 * totals["ace"]
    )


@examples(10)
@given(
    batch=st.integers(1, 5),
    w_bits=st.sampled_from([None, 1, 4, 8]),
    a_bits=st.sampled_from([None, 2, 8]),
    elementwise_bits=st.sampled_from([None, 4, 16]),
    float_bits=st.sampled_from([16, 32]),
)
def test_per_image_counts_do_not_depend_on_the_batch(
    batch, w_bits, a_bits, elementwise_bits, float_bits
):
    model = MobileNetV1(0.25, 32, num_classes=10)
    kwargs = dict(bits=(w_bits, a_bits), elementwise_bits=elementwise_bits, float_bits=float_bits)
    one = ace.count(model, model.example_input(1), **kwargs)
    many = ace.count(model, model.example_input(batch), **kwargs)
    assert many.totals == one.totals and many.batch_size == batch
    whole = ace.count(model, model.example_input(batch), per_image=False, **kwargs)
    assert (
        whole.totals["macs"] == batch * one.totals["macs"]
        and whole.totals["ace"] == batch * one.totals["ace"]
    )


def test_sops_count_elementwise_operations_unweighted_beside_acev2():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.PReLU())
    report = ace.count(model, torch.zeros(1, 1, 5, 5))
    # 2·3·3 = 18 outputs: batch norm 1 mul + 1 add each, PReLU 1 compare + 1 mul each → 72 sops
    assert report.totals["sops"] == 72 and report.totals["ace"] == 18 * 9 * 256
    assert report.totals["acev2"] == report.totals["ace"] + 18 * (256 + 16) + 18 * (16 + 256)


class BatchSum(nn.Module):
    def forward(self, x):
        return x.sum()


def test_a_count_that_is_not_per_image_gets_a_clear_error():
    with pytest.raises(
        ValueError, match="per_image=True, but layer 'sum' does 5 add operations on a batch of 2"
    ):
        ace.count(BatchSum(), torch.zeros(2, 3))
    assert ace.count(BatchSum(), torch.zeros(2, 3), per_image=False).totals["operations"] == 5


def test_cli_resnet18_float_at_batch_1_is_macs_times_256_and_per_image_at_any_batch(capsys):
    assert cli.main(["ace", "--model", "resnet18", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["per_image"] and one["float_bits"] == 16 and one["batch_size"] == 1
    assert one["totals"]["ace"] == one["totals"]["macs"] * 256
    assert cli.main(["ace", "--model", "resnet18", "--json", "--batch-size", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["totals"] == one["totals"] and two["batch_size"] == 2


def test_cli_costs_a_users_factory(capsys):
    assert (
        cli.main(
            [
                "ace",
                "--model",
                "test_ace_conventions:tiny_factory",
                "--bits",
                "4",
                "--a-bits",
                "4",
                "--json",
            ]
        )
        == 0
    )
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["macs"] == 2 * 16 * 9 + 32 * 3 and totals["ace"] == 16 * totals["macs"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ace", "--model", "test_ace_conventions:no_such_factory"])
    assert exit_info.value.code == 2
    assert "cannot import 'no_such_factory'" in capsys.readouterr().err


class Mystery(nn.Conv2d):
    """A conv subclass from outside torch.nn and qatcore, with no bit widths to read."""


def test_an_unknown_conv_subclass_is_costed_as_float_with_a_warning():
    model = nn.Sequential(Mystery(1, 2, 3, bias=False))
    with pytest.warns(
        UserWarning, match=r"layer '0' is a Mystery, a conv/linear subclass it does not know"
    ):
        report = ace.count(model, torch.zeros(1, 1, 5, 5))
    assert {op.bits for op in report.operations if op.kind == "mac"} == {(16, 16)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ace.count(model, torch.zeros(1, 1, 5, 5), bits=(4, 4))  # told its widths: no warning
        ace.count(
            nn.Sequential(nn.Conv2d(1, 2, 3)), torch.zeros(1, 1, 5, 5)
        )  # torch's own: no warning
