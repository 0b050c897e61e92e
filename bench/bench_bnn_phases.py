"""Where a BNN training step's peak memory is reached: the resident set between steps and each phase's high-water mark.

For each model (the MLP, CNV and BinaryNet at batch 100, as in ``bench_bnn.py``) and each mode, fresh processes
(``qatcore.bnn.measure.measured_phase_peaks``) build the model and its optimiser and train two steps, reading the
resident set over the process's resident set before the model was built, as ``measured_peak`` does: once the model
and optimiser exist, between steps (after the last one), and the high-water mark of each phase of a step (the
loss's forward pass, its backward pass, the optimiser's step), the highest over the steps; the median over
processes. Beside them, what the low-memory step holds (``measure_step``: saved tensors, parameters, gradients,
optimiser state).

The between-steps row is the floor under any peak: the weights, the optimiser's state and the batch, plus what the
allocator keeps. A line per model below the table states how far above it the issue's target for that model lies (peak at most
1.3× held for CNV and BinaryNet, a peak at least 2.5× below the standard step's for the MLP): the room a step's
working memory has. Reported, not judged: the targets are judged in ``bench_bnn.py``'s table.

    .venv/bin/python bench/bench_bnn_phases.py            # about 3 minutes on 2 CPU cores
    .venv/bin/python bench/bench_bnn_phases.py --quick    # the MLP, one process per mode; prints only
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
from pathlib import Path

import torch
from bench_bnn import BATCH, HELD_TARGET, PEAK_TARGET
from tables import publish

from qatcore import runtime, zoo
from qatcore.bnn.measure import PHASES, measure_step, measured_phase_peaks
from qatcore.bnn.models import MODES

MIB = 2**20
RESULTS = Path("bench/results/bnn_phases.md")
MODELS = ("bnn_mlp", "cnv", "binarynet")
#: fresh processes per model and mode (the median): the MLP's few MiB vary more from process to process
RUNS = {"bnn_mlp": 5, "cnv": 3, "binarynet": 1}
COLUMNS = ("built", "between_steps", *PHASES)


def measure(name: str, runs: int) -> dict:
    """The median over ``runs`` fresh processes of each reading, per mode, and the low-memory step's held bytes."""
    entry: dict = {"model": name, "batch": BATCH[name], "runs": runs}
    for mode in MODES:
        readings = [measured_phase_peaks(name, mode, BATCH[name]) for _ in range(runs)]
        if any(r is None for r in readings):
            raise SystemExit("the resident set's high-water mark cannot be read here (Linux only)")
        entry[mode] = {c: statistics.median(r[c] for r in readings) for c in COLUMNS}
        entry[mode]["peak"] = max(entry[mode][p] for p in PHASES)
    torch.manual_seed(0)
    model = zoo.build(name)
    step = measure_step(model, "low_memory", BATCH[name])
    entry["held_bytes"] = step.held_bytes
    entry["kept_bytes"] = step.parameter_bytes + step.gradient_bytes + step.optimizer_bytes
    entry["batch_bytes"] = 4 * BATCH[name] * math.prod(model.input_shape)  # float32 images
    return entry


def target_bytes(entry: dict) -> tuple[float, str]:
    """The issue's bound on the low-memory peak for this model, in bytes, and how it is set."""
    name = entry["model"]
    if name in HELD_TARGET:
        return HELD_TARGET[name] * entry["held_bytes"], f"{HELD_TARGET[name]}× held"
    saving = 1 / PEAK_TARGET[name]
    return entry["standard"]["peak"] / saving, f"the standard step's peak / {saving:g}"


def lines_of(record: dict) -> list[str]:
    lines = [
        "# BNN training: where a step's peak memory is reached",
        "",
        f"Adam; torch {record['torch']}, {record['threads']} thread(s), {record['machine']}, {record['cpus']} CPU(s). "
        "MiB over the process's resident set before the model was built (after a throw-away step of the same "
        "shapes loaded the kernels), read in fresh processes training two steps, the median over the processes "
        "(the runs column): once the model and optimiser exist (built), after the last step (between steps), and "
        "the high-water mark of each phase of a step, the highest over the steps. Held = saved tensors + "
        "parameters + gradients + optimiser state of a low-memory step (`measure_step`).",
        "",
        "| model | batch | mode | runs | built | between steps | forward | backward | optimizer | peak "
        "| peak − between steps |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in record["models"]:
        for mode in MODES:
            m = entry[mode]
            lines.append(
                f"| {entry['model']} | {entry['batch']} | {mode} | {entry['runs']} | "
                + " | ".join(f"{m[c] / MIB:.2f}" for c in (*COLUMNS, "peak"))
                + f" | {(m['peak'] - m['between_steps']) / MIB:.2f} |"
            )
    lines.append("")
    for entry in record["models"]:
        low = entry["low_memory"]
        bound, how = target_bytes(entry)
        lines.append(
            f"- {entry['model']}, low-memory: held {entry['held_bytes'] / MIB:.2f} MiB. Between steps the resident "
            f"set is {low['between_steps'] / MIB:.2f} MiB, of which the weights, gradients and optimiser state "
            f"are {entry['kept_bytes'] / MIB:.2f} MiB and the batch {entry['batch_bytes'] / MIB:.2f}. The "
            f"target peak ({how}) is {bound / MIB:.2f} MiB, {(bound - low['between_steps']) / MIB:.2f} MiB above "
            f"that; the measured peak is {(low['peak'] - low['between_steps']) / MIB:.2f} MiB above it, in the "
            f"{max(PHASES, key=lambda p: low[p])} pass."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the MLP, one process per mode")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    runtime.configure(seed=0, threads=1)
    models = MODELS[:1] if args.quick else MODELS
    record = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "models": [],
    }
    for name in models:
        record["models"].append(measure(name, 1 if args.quick else RUNS[name]))
        print(record["models"][-1], flush=True)
    publish(lines_of(record), args.output, args.quick, record)


if __name__ == "__main__":
    main()
