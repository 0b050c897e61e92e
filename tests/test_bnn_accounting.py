"""The authors' memory accounting against their spreadsheet, and the two accountings side by side."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

from qatcore.bnn.memory import (
    AUTHORS_SHEET_BINARYNET,
    OPTIMIZERS,
    accounting_rows,
    authors_rows,
    layer_shapes,
    sheet_mib,
    total_bytes,
)
from qatcore.bnn.models import BNNMLP, CNV, BinaryNet
from qatcore.cli import main

BINARYNET = layer_shapes(BinaryNet())
# the sheet's three group totals (MB columns G, O, W of rows 22–28), standard and proposed
SHEET_GROUPS_BINARYNET = {
    ("standard", "sgd"): (53.504432678222656, 106.9794921875, 211.33193969726563),
    ("standard", "adam"): (53.504432678222656, 160.46923828125, 211.33193969726563),
    ("standard", "bop"): (1.468658447265625e-2, 106.9794921875, 211.33193969726563),
    ("low_memory", "sgd"): (26.752216339111328, 28.416427612304688, 36.291623115539551),
    ("low_memory", "adam"): (26.752216339111328, 55.161300659179688, 36.291623115539551),
    ("low_memory", "bop"): (7.343292236328125e-3, 28.416427612304688, 36.291623115539551),
}


@pytest.mark.parametrize("mode, optimizer", list(AUTHORS_SHEET_BINARYNET))
def test_authors_accounting_reproduces_the_binarynet_sheet(mode, optimizer):
    mib = sheet_mib(authors_rows(None, 100, mode, optimizer, "po2", BINARYNET))
    assert (mib["model"], mib["optimiser"], mib["activation"]) == SHEET_GROUPS_BINARYNET[
        mode, optimizer
    ]
    assert mib["total"] == AUTHORS_SHEET_BINARYNET[mode, optimizer]


def test_sheet_savings_and_counts():
    rows = authors_rows(None, 100, "standard", "adam", shapes=BINARYNET)
    counts = {r.variable: r.values for r in rows}
    # the sheet's cells C22 (weights), E22 (β), Q22 (activations) and S22 (largest activation)
    assert counts["weights"] == 14022016 and counts["bias (per-channel β)"] == 3850
    assert counts["activation"] == 29185000 and counts["activation gradient 1"] == 13107200
    savings = {
        o: AUTHORS_SHEET_BINARYNET["standard", o] / AUTHORS_SHEET_BINARYNET["low_memory", o]
        for o in OPTIMIZERS
    }
    assert savings == pytest.approx(
        {"sgd": 4.0653266876073308, "adam": 3.5980297493592284, "bop": 4.9188624018956713}
    )


@given(st.sampled_from(OPTIMIZERS), st.integers(1, 500))
@examples(30)
def test_float16_buffer_costs_eleven_bits_more_per_value(optimizer, batch):
    po2, f16 = (
        authors_rows(None, batch, "low_memory", optimizer, g, BINARYNET) for g in ("po2", "float16")
    )
    largest = max(r.values for r in po2 if r.kind == "gradient buffers")
    assert sum(r.values * r.bits for r in f16) - sum(r.values * r.bits for r in po2) == 11 * largest
    standard = authors_rows(None, batch, "standard", optimizer, "float16", BINARYNET)
    assert standard == authors_rows(None, batch, "standard", optimizer, "po2", BINARYNET)


@pytest.mark.parametrize("factory", [BNNMLP, CNV, BinaryNet])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_both_accountings_save_memory_and_autograd_holds_more(factory, optimizer):
    shapes = layer_shapes(factory())
    totals = {
        (a, m): total_bytes(
            accounting_rows(None, 100, m, accounting=a, optimizer=optimizer, shapes=shapes)
        )
        for a in ("authors", "autograd")
        for m in ("standard", "low_memory")
    }
    for a in ("authors", "autograd"):
        assert totals[a, "low_memory"] < totals[a, "standard"] / 2
    # the standard autograd view adds float32 masks, x̂ and the loss to the sheet's rows, and drops its buffers
    assert totals["autograd", "standard"] > totals["authors", "standard"] - 2 * 4 * 100 * max(
        s.per_example for s in shapes
    )


def test_bad_choices_are_named():
    for kwargs, name in (
        (dict(accounting="sheet"), "accounting"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(gradient="int8"), "gradient"),
    ):
        with pytest.raises(ValueError, match=name):
            accounting_rows(None, 10, "standard", shapes=BINARYNET, **kwargs)
    with pytest.raises(ValueError, match="mode"):
        authors_rows(None, 10, "fast", shapes=BINARYNET)


def test_cli_authors_accounting(capsys):
    args = [
        "bnn-memory",
        "--model",
        "binarynet",
        "--batch-size",
        "100",
        "--optimizer",
        "bop",
        "--accounting",
        "authors",
        "--gradient",
        "po2",
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accounting"] == "authors" and summary["optimizer"] == "bop"
    assert summary["standard_bytes"] / 2**20 == pytest.approx(
        AUTHORS_SHEET_BINARYNET["standard", "bop"], rel=1e-12
    )
    assert summary["low_memory_bytes"] / 2**20 == pytest.approx(
        AUTHORS_SHEET_BINARYNET["low_memory", "bop"], rel=1e-12
    )
