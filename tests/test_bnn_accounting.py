"""The authors' memory accounting against their spreadsheet, and the two accountings side by side."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

from qatcore.bnn.memory import (
    ABSTRACT_RESNETE18_SAVING,
    AUTHORS_SHEET_BINARYNET,
    AUTHORS_SHEET_RESNETE18,
    AUTHORS_SHEET_RESNETE18_BATCH,
    OPTIMIZERS,
    README_RESNETE18_BATCH,
    accounting_rows,
    authors_rows,
    layer_shapes,
    sheet_mib,
    total_bytes,
)
from qatcore.bnn.models import BNNMLP, CNV, BinaryNet, ResNetE18
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


# The ResNetE-18 tab of the same spreadsheet (awai54st/Enabling-Binary-Neural-Network-Training-on-the-Edge,
# memory_estimation/memory_estimation.xlsx at commit 2bee19b, the parent of 7c6e603 that deleted it; the same
# file on branch dev_birealnet), batch 4096 (cell L2): each column's "#" and "precision" cells, rows 48–54.
# The two output-gradient columns (AC/AD "po2 activation gradient out", AE/AF "activation gradient out")
# enter the total as the larger of their two products, which is one row here.
RESNETE18 = layer_shapes(ResNetE18())
_COUNTS = {
    "weights": 11678912,  # C48 = SUM(G4:G24)
    "bias": 5800,  # E48 = SUM(F4:F24)
    "binary weight gradient": 10985472,  # I48
    "weight gradient": 693440,  # K48 = G4+G9+G14+G19+G24
    "momentum 1": 11678912,  # M48
    "binary activation in": 6884950016,  # S48
    "binary activation out": 6165626880,  # U48
    "non-binary activations": 1078984704,  # W48 = M9+M14+M19+S9+S14+S19
    "first/last layer activations": 3911090176,  # Y48 = M4+M24+S4+S24
    "activation gradient in": 822083584,  # AA48 = MAX(M4:M24)
}
_STANDARD_BITS = dict.fromkeys(_COUNTS, 32) | {"binary activation in": 1}
_OURS_BITS = dict.fromkeys(_COUNTS, 16) | {
    "binary weight gradient": 1,  # N2
    "binary activation in": 1,
    "binary activation out": 1,  # P2, the "BN trick"
}
SHEET_RESNETE18 = {
    (mode, optimizer): {
        k: (
            0 if (k == "weights" and optimizer == "bop") else n,
            (_STANDARD_BITS if mode == "standard" else _OURS_BITS)[k],
        )
        for k, n in _COUNTS.items()
    }
    | {"momentum 2": (11678912 if optimizer == "adam" else 0, 32 if mode == "standard" else 16)}
    for mode in ("standard", "low_memory")
    for optimizer in OPTIMIZERS
}
# AC × AD (largest binary-layer output, 822083584, at 32 / 16 bits: cell O2 "PO2 ∂Y?" holds 16) against
# AE × AF (largest real-layer output, conv1's, 3288334336, at 32 / 16 bits): the second is larger
SHEET_RESNETE18_GRADIENT_OUT = {"standard": 3288334336 * 32, "low_memory": 3288334336 * 16}
# the tab's group totals (MB columns G, Q, AG) and its "Savings" column AJ (AI48/AI52 …)
SHEET_GROUPS_RESNETE18 = {
    ("standard", "sgd"): (44.573638916015625, 89.10302734375, 59056.375),
    ("standard", "adam"): (44.573638916015625, 133.654541015625, 59056.375),
    ("standard", "bop"): (0.022125244140625, 89.10302734375, 59056.375),
    ("low_memory", "sgd"): (22.286819458007812, 24.907958984375, 18913.5625),
    ("low_memory", "adam"): (22.286819458007812, 47.1837158203125, 18913.5625),
    ("low_memory", "bop"): (0.0110626220703125, 24.907958984375, 18913.5625),
}
SHEET_SAVINGS_RESNETE18 = {
    "sgd": 3.1217134841737817,
    "adam": 3.1203972025887152,
    "bop": 3.1230328622234182,
}


@pytest.mark.parametrize("gradient", ["po2", "float16"])
@pytest.mark.parametrize("mode, optimizer", list(AUTHORS_SHEET_RESNETE18))
def test_authors_accounting_reproduces_the_resnete18_tab_row_by_row(mode, optimizer, gradient):
    rows = authors_rows(None, AUTHORS_SHEET_RESNETE18_BATCH, mode, optimizer, gradient, RESNETE18)
    ours = {r.variable: (r.values, r.bits) for r in rows}
    out = ours.pop("activation gradient out")
    assert ours == SHEET_RESNETE18[mode, optimizer]
    assert out[0] * out[1] == SHEET_RESNETE18_GRADIENT_OUT[mode]
    mib = sheet_mib(rows)
    expected = SHEET_GROUPS_RESNETE18[mode, optimizer]
    assert (mib["model"], mib["optimiser"], mib["activation"]) == pytest.approx(expected, rel=1e-3)
    assert mib["total"] == pytest.approx(AUTHORS_SHEET_RESNETE18[mode, optimizer], rel=1e-3)
    assert mib["total"] == AUTHORS_SHEET_RESNETE18[mode, optimizer]  # in fact to the last bit


def test_resnete18_tab_savings_against_the_abstract():
    savings = {
        o: AUTHORS_SHEET_RESNETE18["standard", o] / AUTHORS_SHEET_RESNETE18["low_memory", o]
        for o in OPTIMIZERS
    }
    assert savings == pytest.approx(SHEET_SAVINGS_RESNETE18, rel=1e-12)
    # the tab's ≈3.12× is not the abstract's 3.78× at the same batch (the README's 4096 is the tab's)
    assert README_RESNETE18_BATCH == AUTHORS_SHEET_RESNETE18_BATCH
    assert all(abs(s - ABSTRACT_RESNETE18_SAVING) > 0.6 for s in savings.values())


@given(st.sampled_from(OPTIMIZERS), st.integers(1, 300))
@examples(20)
def test_resnete18_tab_scales_with_the_batch(optimizer, batch):
    """Every activation row is per example × batch; the model and optimiser groups do not move."""
    one, many = (
        sheet_mib(authors_rows(None, b, "low_memory", optimizer, shapes=RESNETE18))
        for b in (1, batch)
    )
    assert many["model"] == one["model"] and many["optimiser"] == one["optimiser"]
    assert many["activation"] == pytest.approx(batch * one["activation"], rel=1e-12)
