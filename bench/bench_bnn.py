"""Memory and time per training step of the paper's BNNs, standard vs low-memory.

For each model (MLP on 28×28, CNV and BinaryNet on 32×32×3 at batch 100; ResNetE-18 on 224×224×3 at
batch 16, what fits a small machine) and each mode: the bytes of both
accountings (the authors' spreadsheet rows, and what autograd holds), the measured bytes a real
step holds (saved tensors + parameters + gradients + optimiser state,
``qatcore.bnn.measure.measure_step``), the peak resident memory of training in a fresh process
(``measured_peak``: weights, state, forward and backward, over the process before the model), and
the time per step. Timing is built to survive a shared machine: after warm-up steps, rounds each time
one step of each mode in one process (the order alternating), so load from other processes hits both
alike; a step's time is the process's CPU time (``time.process_time``: waiting for a core does not
count); the time ratio is the median over rounds of the ratio within a round. Memory is measured
after all timing (its allocator setting slows steps down). Results go to ``bench/results/bnn.md``
and ``bench/results/bnn.json``; a run of some models (``--models``) replaces only their entries there.

Targets (the issue's, not tests): at batch 100 the low-memory peak at most 1/8 of the standard peak for
CNV, 1/5 for BinaryNet and 1/2.5 for the MLP, and at most 1.3× what the low-memory step holds for CNV and
BinaryNet; the low-memory step at most 1.5× the standard step (ResNetE-18: the time target only). The three
small models' low-memory step is streamed (``qatcore.bnn.streamed``) wherever a stage's batch spans several
chunks: CNV and BinaryNet at batch 100, the MLP from a larger batch on.

    .venv/bin/python bench/bench_bnn.py --models bnn_mlp,cnv,binarynet   # several minutes on 2 CPU cores
    .venv/bin/python bench/bench_bnn.py --models resnete18 --rounds 3 --seconds 0 --peak-runs 1
    .venv/bin/python bench/bench_bnn.py --quick      # MLP only, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from qatcore import runtime, zoo
from qatcore.bnn.measure import measure_step, measured_peak
from qatcore.bnn.memory import accounting_rows, total_bytes
from qatcore.bnn.models import MODELS, MODES, set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.train import training_step

MIB = 2**20
TIME_TARGET = 1.5
PEAK_TARGET = {"bnn_mlp": 1 / 2.5, "cnv": 1 / 8, "binarynet": 1 / 5}
#: the low-memory peak over the bytes the low-memory step holds
HELD_TARGET = {"cnv": 1.3, "binarynet": 1.3}
#: the batch of each model when --batch is not given
BATCH = {"bnn_mlp": 100, "cnv": 100, "binarynet": 100, "resnete18": 16}


WARM_UP = 3  # steps per mode before timing


def time_modes(name: str, batch: int, rounds: int, seconds: float) -> dict[str, list[float]]:
    """CPU seconds per step of each mode in rounds (one step of each, the order alternating): at least
    ``rounds`` rounds, more while the timed steps have taken under ``seconds`` (at most 200 rounds)."""
    setups = {}
    for mode in MODES:
        torch.manual_seed(0)
        model = set_mode(zoo.build(name), mode).train()
        optimizer = make_optimizer(model, mode)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((batch, *model.input_shape), generator=generator) * 2 - 1
        y = torch.randint(0, 10, (batch,), generator=generator)
        for _ in range(WARM_UP):
            training_step(model, optimizer, x, y)
        setups[mode] = (model, optimizer, x, y)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    r = 0
    while r < rounds or (sum(map(sum, times.values())) < seconds and r < 200):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            started = time.process_time()
            training_step(*setups[mode])
            times[mode].append(time.process_time() - started)
        r += 1
    return times


def header(record: dict) -> list[str]:
    """The results file's opening lines."""
    return [
        "# BNN training: memory and time per step, standard vs low-memory",
        "",
        f"Adam; torch {record['torch']}, {record['threads']} thread(s), {record['machine']}, "
        f"{record['cpus']} CPU(s). Batch per row. Timing: after {WARM_UP} warm-up steps per mode, rounds of one step "
        "of each mode in one process (order alternating), at least a minimum number of rounds and more while the "
        "timed steps took under a time budget (each model's below; the rounds column says how many ran); a step's "
        "time is the process's CPU time (`time.process_time`, so waiting for a core while other programs run does "
        "not count); s/step is the median over rounds, the time ratio the median over rounds of "
        "low-memory/standard within a round. Authors = the rows of the authors' spreadsheet (dY buffers po2; "
        "ResNetE-18: its own tab's rows); autograd = what PyTorch holds; held = saved tensors + parameters + "
        "gradients + optimiser state of a real step; peak = resident-memory high-water mark of training two "
        "steps in a fresh process, over its resident set before the model was built (after a throw-away step of "
        "the same shapes loaded the kernels), the median of the model's fresh processes (the MLP's few MiB vary "
        "by a few tenths of a MiB from process to process).",
        "",
        "| model | batch | mode | authors MiB | autograd MiB | held MiB | peak MiB | peak/held | s/step | rounds | time ratio |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]


def model_lines(name: str, entry: dict, default_batch: int) -> list[str]:
    """One model's three table rows."""
    batch, lines = entry.get("batch", default_batch), []
    for mode in MODES:
        e, peak = entry[mode], entry[mode]["peak_bytes"]
        held, ratio = e["held_bytes"], entry["time_ratio"]
        lines.append(
            f"| {name} | {batch} | {mode} | {e['authors_bytes'] / MIB:.2f} | {e['autograd_bytes'] / MIB:.2f} | "
            f"{e['held_bytes'] / MIB:.2f} | {'n/a' if peak is None else f'{peak / MIB:.1f}'} | "
            f"{'n/a' if peak is None else f'{peak / held:.2f}'} | {e['seconds_per_step']:.4f} | "
            f"{entry['rounds']} | {'' if mode == 'standard' else f'{ratio:.2f}'} |"
        )
    low, std, p = entry["low_memory"], entry["standard"], entry["peak_ratio"]
    lines.append(
        f"| {name} | {batch} | **low / standard** | {low['authors_bytes'] / std['authors_bytes']:.3f} | "
        f"{low['autograd_bytes'] / std['autograd_bytes']:.3f} | {low['held_bytes'] / std['held_bytes']:.3f} | "
        f"**{'n/a' if p is None else f'{p:.3f}'}** | | | | |"
    )
    return lines


def verdict(name: str, entry: dict) -> str:
    """One model's line against the targets, with its timing settings and any note."""
    r, p, q = entry["time_ratio"], entry["peak_ratio"], entry["time_ratio_quartiles"]
    target = PEAK_TARGET.get(name)
    peak = f"peak {'n/a' if p is None else f'{p:.3f}'} of standard" + (
        " (no target)"
        if target is None
        else f" (target ≤ {target:.3f}) {'PASS' if p is not None and p <= target else 'MISS'}"
    )
    low = entry["low_memory"]
    if name in HELD_TARGET and low["peak_bytes"] is not None:
        held = low["peak_bytes"] / low["held_bytes"]
        ok = held <= HELD_TARGET[name]
        peak += f"; peak {held:.2f}× held (target ≤ {HELD_TARGET[name]}) {'PASS' if ok else 'MISS'}"
    settings = entry.get("settings", {"rounds": 7, "seconds": 30.0, "peak_runs": 3})
    line = (
        f"- {name}: {peak}; time {r:.2f}× (quartiles over rounds {q[0]:.2f}–{q[2]:.2f}; target ≤ "
        f"{TIME_TARGET}×) {'PASS' if r <= TIME_TARGET else 'MISS'}; at least {settings['rounds']} rounds, "
        f"{settings['seconds']:.0f} s budget, peak over {settings['peak_runs']} process(es)"
    )
    return line + (f". {entry['note']}" if entry.get("note") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default: BATCH of each model")
    parser.add_argument("--rounds", type=int, default=7, help="at least this many timing rounds")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="more rounds while timing took less"
    )
    parser.add_argument(
        "--models",
        default="bnn_mlp,cnv,binarynet",
        help=f"comma-separated model names ({', '.join(MODELS)})",
    )
    parser.add_argument(
        "--peak-runs", type=int, default=3, help="fresh processes per peak (median)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the timed steps (1: CPU time is work, not spinning threads)",
    )
    parser.add_argument(
        "--note", default="", help="a sentence printed beside these models' results"
    )
    parser.add_argument("--quick", action="store_true", help="MLP only, 3 rounds, no results file")
    parser.add_argument("--output", default="bench/results/bnn.md")
    args = parser.parse_args()
    runtime.configure(seed=0, threads=args.threads)
    models = ["bnn_mlp"] if args.quick else [m for m in args.models.split(",") if m]
    rounds = 3 if args.quick else args.rounds
    seconds = 5.0 if args.quick else args.seconds
    output = Path(args.output).with_suffix(".json")
    record = (
        json.loads(output.read_text(encoding="utf-8"))
        if output.exists() and not args.quick
        else {"batch": 100, "models": {}}
    )
    record.update(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
    )
    for name in models:
        batch = args.batch or BATCH[name]
        times = time_modes(name, batch, rounds, seconds)
        medians = {mode: statistics.median(t) for mode, t in times.items()}
        ratios = [lo / st for lo, st in zip(times["low_memory"], times["standard"], strict=True)]
        entry = {
            "batch": batch,
            "time_ratio": statistics.median(ratios),
            "rounds": len(ratios),
            "time_ratio_quartiles": statistics.quantiles(ratios, n=4),
            "settings": {"rounds": rounds, "seconds": seconds, "peak_runs": args.peak_runs},
            "note": args.note,
        }
        for mode in MODES:
            torch.manual_seed(0)
            model = zoo.build(name)
            authors = total_bytes(accounting_rows(model, batch, mode, accounting="authors"))
            autograd = total_bytes(accounting_rows(model, batch, mode, accounting="autograd"))
            held = measure_step(model, mode, batch).held_bytes
            peaks = [measured_peak(name, mode, batch) for _ in range(args.peak_runs)]
            entry[mode] = {
                "authors_bytes": authors,
                "autograd_bytes": autograd,
                "held_bytes": held,
                "peak_bytes": None if None in peaks else statistics.median(peaks),
                "seconds_per_step": medians[mode],
            }
        low, std = entry["low_memory"], entry["standard"]
        entry["peak_ratio"] = (
            None if low["peak_bytes"] is None else low["peak_bytes"] / std["peak_bytes"]
        )
        record["models"][name] = entry
        print("\n".join([*model_lines(name, entry, batch), verdict(name, entry)]), flush=True)
    order = [m for m in MODELS if m in record["models"]]
    lines = header(record)
    for m in order:
        lines += model_lines(m, record["models"][m], record["batch"])
    lines += ["", *(verdict(m, record["models"][m]) for m in order)]
    if not args.quick:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        output.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
