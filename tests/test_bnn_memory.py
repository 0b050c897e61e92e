"""The analytic memory model against a measured training step, the CLI and the widget callback."""

import json

import matplotlib.pyplot as plt
import pytest
import torch

from qatcore.bnn import streamed
from qatcore.bnn.measure import (
    PHASES,
    measure_step,
    measured_phase_peaks,
    memory_summary,
    peak_in_this_process,
    phase_peaks_in_this_process,
    return_freed_memory,
)
from qatcore.bnn.memory import (
    KINDS,
    LOW_MEMORY,
    STANDARD,
    Choices,
    MemoryRow,
    choices_for,
    compare_modes,
    memory_rows,
    memory_table,
    total_bytes,
    waterfall,
)
from qatcore.bnn.models import BNNMLP, CNV, BinaryNet, ResNetE18
from qatcore.bnn.widgets import BATCH_RANGE, breakdown_view
from qatcore.cli import main


@pytest.mark.parametrize(
    "factory, kwargs, batch",
    [
        (BNNMLP, dict(image_size=8, in_channels=1), 12),
        (CNV, dict(image_size=8, in_channels=1), 12),
        (BinaryNet, dict(image_size=8, in_channels=1), 12),
        (ResNetE18, dict(image_size=64, num_classes=10), 2),  # real layers, ReLU, stem max-pool
    ],
    ids=["mlp", "cnv", "binarynet", "resnete18"],
)
@pytest.mark.parametrize("mode", ["standard", "low_memory"])
def test_model_equals_what_a_real_step_holds(factory, kwargs, batch, mode):
    torch.manual_seed(0)
    model = factory(**kwargs)
    rows = memory_rows(model, batch, choices_for(mode))
    measured = measure_step(model, mode, batch)
    assert measured.saved_bytes == pytest.approx(sum(r.bytes for r in rows if r.saved), rel=1e-3)
    assert measured.held_bytes == pytest.approx(total_bytes(rows), rel=1e-3)


def test_low_memory_really_keeps_bits():
    model = BNNMLP(image_size=8)
    standard, low = measure_step(model, "standard", 64), measure_step(model, "low_memory", 64)
    # hidden layers: 4 binary inputs, 4 STE masks, 4 sign(x̂) of 64×256 values: 32 bits → 1 bit
    assert standard.saved_bytes - low.saved_bytes > 12 * 64 * 256 * (4 - 1 / 8) * 0.99


def test_rows_scale_with_batch_and_bits():
    row = MemoryRow("l", "v", "masks", 17, 1)
    assert row.bytes == 3 and MemoryRow("l", "v", "masks", 17, 32).bytes == 68
    model = CNV()
    small, large = memory_rows(model, 10, STANDARD), memory_rows(model, 20, STANDARD)
    for a, b in zip(
        small, large, strict=False
    ):  # every variable is fixed or proportional to the batch
        assert b.values in (a.values, 2 * a.values) and (b.values == a.values) == (
            a.kind in KINDS[:3]
            or a.variable in ("γ, β", "running μ, σ²", "dγ, dβ", "Adam m, v of γ, β", "μ, 1/σ")
        )
    steps = waterfall(model, 100)
    assert [total for _, total in steps] == sorted((total for _, total in steps), reverse=True)
    assert steps[0][1] == compare_modes(model, 100)["standard_bytes"]
    assert steps[-1][1] == compare_modes(model, 100)["low_memory_bytes"]
    assert "**total**" in memory_table(memory_rows(model, 1, Choices(bit_masks=True)))


def test_every_kind_shrinks_or_stays():
    model = BinaryNet()
    from qatcore.bnn.memory import bytes_by_kind

    standard = bytes_by_kind(memory_rows(model, 100, STANDARD))
    low = bytes_by_kind(memory_rows(model, 100, LOW_MEMORY))
    assert all(low[k] <= standard[k] for k in KINDS)
    assert low["weights"] * 2 == standard["weights"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size"):
        memory_rows(BNNMLP(), 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        choices_for("fast")
    with pytest.raises(ValueError, match="model must be one of"):
        memory_summary("resnet", 10)


def test_cli_json_has_the_issue_fields(capsys):
    assert (
        main(["bnn-memory", "--model", "bnn_mlp", "--batch-size", "10", "--measure", "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["ratio"] == pytest.approx(
        summary["standard_bytes"] / summary["low_memory_bytes"]
    )
    for mode, key in (("standard", "standard_bytes"), ("low_memory", "low_memory_bytes")):
        assert summary["measured"][mode]["held_bytes"] == pytest.approx(summary[key], rel=1e-3)
        peak = summary[
            f"measured_peak_{mode}_bytes"
        ]  # a fresh process's peak holds at least the weights
        assert peak is None or peak > summary["by_kind"][mode]["weights"]
    assert main(["bnn-memory", "--model", "cnv"]) == 0
    assert "ratio" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["bnn_mlp", "cnv", "binarynet", "resnete18"])
@pytest.mark.parametrize("batch", [BATCH_RANGE[0], 100, BATCH_RANGE[1]])
def test_widget_callback_at_every_control_extreme(model, batch):
    text, figure = breakdown_view(model, batch)
    assert text.startswith(f"{model}, batch {batch}:") and figure.axes
    assert (
        not plt.get_fignums()
    )  # a plain Figure: redrawing the widget leaves no pyplot figure behind


@pytest.mark.parametrize("measure", [peak_in_this_process, phase_peaks_in_this_process])
def test_a_peak_is_measured_at_the_chunks_and_budgets_given(monkeypatch, measure):
    seen = []
    plan = streamed.plan

    def spying(stages, x_shape):
        seen.append((streamed.ROW_VALUES, streamed.OUTPUT_SHARE, streamed.GRADIENT_SHARE))
        return plan(stages, x_shape)

    monkeypatch.setattr(streamed, "plan", spying)
    budgets = {"row_values": 2_000, "output_share": 0.1, "gradient_share": 0.2}
    try:
        peak = measure("cnv", "low_memory", 4, budgets=budgets)
    finally:
        return_freed_memory(on=False)
    assert peak is None or (peak if isinstance(peak, int) else max(peak.values())) > 0
    assert len(seen) == 3 and set(seen) == {
        (2_000, 0.1, 0.2)
    }  # the throw-away step and the two measured
    assert streamed.ROW_VALUES != 2_000


def test_a_measurement_in_a_fresh_process_names_what_went_wrong_there():
    with pytest.raises(RuntimeError, match="phase_peaks_in_this_process failed: KeyError: 'lenet'"):
        measured_phase_peaks("lenet", "low_memory", 100)


def test_each_phase_of_a_step_peaks_above_what_the_process_keeps_between_steps():
    phases = {
        mode: measured_phase_peaks("bnn_mlp", mode, 100) for mode in ("standard", "low_memory")
    }
    if None in phases.values():
        pytest.skip("the resident set's high-water mark is read on Linux only")
    for mode, read in phases.items():
        torch.manual_seed(0)
        step = measure_step(BNNMLP(), mode, 100)
        kept = step.parameter_bytes + step.gradient_bytes + step.optimizer_bytes
        assert read["built"] >= step.parameter_bytes  # the weights are written when made
        assert read["between_steps"] >= kept  # the gradients stay until the next step's zero_grad
        assert min(read[p] for p in PHASES) >= read["built"]
        assert (
            read["optimizer"] >= read["between_steps"] - 2**16
        )  # read after it, with nothing made since
    # the standard step's float32 gradients and moments are what the low-memory step does without
    assert max(phases["low_memory"][p] for p in PHASES) < phases["standard"]["between_steps"]


def test_cli_text_gives_each_mode_its_held_bytes_and_one_peak_read_in_a_fresh_process(capsys):
    """The text names one peak per mode, the fresh process's, not the in-process reading that earlier steps
    can distort."""
    assert main(["bnn-memory", "--model", "bnn_mlp", "--batch-size", "10", "--measure"]) == 0
    lines = capsys.readouterr().out.splitlines()
    measured = [line for line in lines if line.lstrip().startswith("measured")]
    assert [line.split(":")[0].split()[-1] for line in measured] == ["standard", "low_memory"]
    for line in measured:
        assert "held" in line and line.count("peak") == 1 and "fresh process" in line
        assert "RSS" not in line
