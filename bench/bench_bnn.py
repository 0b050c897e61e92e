"""Memory and time per training step of the paper's three BNNs, standard vs low-memory, batch 100.

For each model (MLP on 28×28, CNV and BinaryNet on 32×32×3) and each mode: the bytes of both
accountings (the authors' spreadsheet rows, and what autograd holds), the measured bytes a real
step holds (saved tensors + parameters + gradients + optimiser state,
``qatcore.bnn.measure.measure_step``), the peak resident memory of training in a fresh process
(``measured_peak``: weights, state, forward and backward, over the process before the model), and
the time per step. Timing is built to survive a shared machine: after warm-up steps, rounds each time
one step of each mode in one process (the order alternating), so load from other processes hits both
alike; a step's time is the process's CPU time (``time.process_time``: waiting for a core does not
count); the time ratio is the median over rounds of the ratio within a round. Memory is measured
after all timing (its allocator setting slows steps down). Results go to ``bench/results/bnn.md``
and ``bench/results/bnn.json``.

Targets (the issue's, not tests): at batch 100 the low-memory peak at most 1/3 of the standard peak
for CNV and BinaryNet, 1/2 for the MLP, and the low-memory step at most 1.5× the standard step.

    .venv/bin/python bench/bench_bnn.py              # several minutes on 2 CPU cores, one torch thread
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
PEAK_TARGET = {"bnn_mlp": 1 / 2, "cnv": 1 / 3, "binarynet": 1 / 3}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7, help="at least this many timing rounds")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="more rounds while timing took less"
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    parser.add_argument(
        "--peak-runs", type=int, default=3, help="fresh processes per peak (median)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the timed steps (1: CPU time is work, not spinning threads)",
    )
    parser.add_argument("--quick", action="store_true", help="MLP only, 3 rounds, no results file")
    parser.add_argument("--output", default="bench/results/bnn.md")
    args = parser.parse_args()
    runtime.configure(seed=0, threads=args.threads)
    models = ["bnn_mlp"] if args.quick else args.models.split(",")
    rounds = 3 if args.quick else args.rounds
    seconds = 5.0 if args.quick else args.seconds
    lines = [
        "# BNN training: memory and time per step, standard vs low-memory",
        "",
        f"Batch {args.batch}, Adam; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.machine()}, {os.cpu_count()} CPU(s). Timing: after {WARM_UP} warm-up steps per mode, "
        f"rounds of one step of each mode in one process (order alternating), at least {rounds} rounds and more "
        f"while the timed steps took under {seconds:.0f} s (the rounds column); a step's time is the process's "
        "CPU time (`time.process_time`, so waiting for a core while other programs run does not count); "
        "s/step is the median over rounds, the time ratio the median over rounds of low-memory/standard "
        "within a round. Authors = the rows of the authors' spreadsheet (dY buffers po2); autograd = what PyTorch "
        "holds; held = saved tensors + parameters + gradients + optimiser state of a real step; "
        "peak = resident-memory high-water mark of training two steps in a fresh process, over its resident "
        "set before the model was built (after a throw-away step of the same shapes loaded the kernels), the "
        f"median of {args.peak_runs} fresh processes (the MLP's few MiB vary by a few tenths of a MiB from "
        "process to process).",
        "",
        "| model | mode | authors MiB | autograd MiB | held MiB | peak MiB | peak/held | s/step | rounds | time ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts, record = [], {"batch": args.batch, "models": {}}
    for name in models:
        times = time_modes(name, args.batch, rounds, seconds)
        medians = {mode: statistics.median(t) for mode, t in times.items()}
        ratio = statistics.median(
            low / std for low, std in zip(times["low_memory"], times["standard"], strict=True)
        )
        done = len(times["standard"])
        entry = record["models"][name] = {
            "time_ratio": ratio,
            "rounds": done,
            "time_ratio_quartiles": statistics.quantiles(
                [lo / st for lo, st in zip(times["low_memory"], times["standard"], strict=True)],
                n=4,
            ),
        }
        for mode in MODES:
            torch.manual_seed(0)
            model = zoo.build(name)
            authors = total_bytes(accounting_rows(model, args.batch, mode, accounting="authors"))
            autograd = total_bytes(accounting_rows(model, args.batch, mode, accounting="autograd"))
            held = measure_step(model, mode, args.batch).held_bytes
            peaks = [measured_peak(name, mode, args.batch) for _ in range(args.peak_runs)]
            peak = None if None in peaks else statistics.median(peaks)
            entry[mode] = {
                "authors_bytes": authors,
                "autograd_bytes": autograd,
                "held_bytes": held,
                "peak_bytes": peak,
                "seconds_per_step": medians[mode],
            }
            lines.append(
                f"| {name} | {mode} | {authors / MIB:.2f} | {autograd / MIB:.2f} | {held / MIB:.2f} | "
                f"{'n/a' if peak is None else f'{peak / MIB:.1f}'} | "
                f"{'n/a' if peak is None else f'{peak / held:.2f}'} | {medians[mode]:.4f} | {done} | "
                f"{'' if mode == 'standard' else f'{ratio:.2f}'} |"
            )
            print(lines[-1], flush=True)
        low, std = entry["low_memory"], entry["standard"]
        peak_ratio = None if low["peak_bytes"] is None else low["peak_bytes"] / std["peak_bytes"]
        entry["peak_ratio"] = peak_ratio
        verdicts.append((name, ratio, peak_ratio, entry["time_ratio_quartiles"]))
        lines.append(
            f"| {name} | **low / standard** | {low['authors_bytes'] / std['authors_bytes']:.3f} | "
            f"{low['autograd_bytes'] / std['autograd_bytes']:.3f} | {low['held_bytes'] / std['held_bytes']:.3f} | "
            f"**{'n/a' if peak_ratio is None else f'{peak_ratio:.3f}'}** | | | | |"
        )
    lines += [""]
    lines += [
        f"- {n}: peak {'n/a' if p is None else f'{p:.3f}'} of standard (target ≤ {PEAK_TARGET[n]:.3f}) "
        f"{'PASS' if p is not None and p <= PEAK_TARGET[n] else 'MISS'}; time {r:.2f}× "
        f"(quartiles over rounds {q[0]:.2f}–{q[2]:.2f}; target ≤ {TIME_TARGET}×) "
        f"{'PASS' if r <= TIME_TARGET else 'MISS'}"
        for n, r, p, q in verdicts
    ]
    print("\n".join(lines[-len(verdicts) :]))
    if not args.quick:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        Path(args.output).with_suffix(".json").write_text(
            json.dumps(record, indent=1) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()
