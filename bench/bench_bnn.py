"""Memory and time per training step of the paper's three BNNs, standard vs low-memory, batch 100.

For each model (MLP on 28×28, CNV and BinaryNet on 32×32×3) and each mode: the analytic model's
bytes, the measured bytes a real step holds (saved tensors + parameters + gradients + optimiser
state, ``qatcore.bnn.measure.measure_step``), the peak resident-memory increase over the step,
and the median time per step. Timing goes round-robin: every round times one step of each mode
(the order alternates), so load from other processes hits both alike; memory is measured after
all timing (its allocator setting slows steps down). Results go to ``bench/results/bnn.md``.

Target (the paper's claim, not a test): the low-memory step at most 1.5× the standard step.

    .venv/bin/python bench/bench_bnn.py              # several minutes on 2 CPU cores
    .venv/bin/python bench/bench_bnn.py --quick      # MLP only, prints only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from qatcore import runtime, zoo
from qatcore.bnn.measure import CLI_MODELS, measure_step
from qatcore.bnn.memory import choices_for, memory_rows, total_bytes
from qatcore.bnn.models import MODES, set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.train import training_step

MIB = 2**20
TIME_TARGET = 1.5


def time_modes(name: str, batch: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of each mode, ``rounds`` times, round-robin with alternating order."""
    setups = {}
    for mode in MODES:
        torch.manual_seed(0)
        model = set_mode(zoo.build(name), mode).train()
        optimizer = make_optimizer(model, mode)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((batch, *model.input_shape), generator=generator) * 2 - 1
        y = torch.randint(0, 10, (batch,), generator=generator)
        training_step(model, optimizer, x, y)  # warm-up
        setups[mode] = (model, optimizer, x, y)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            started = time.perf_counter()
            training_step(*setups[mode])
            times[mode].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="MLP only, 3 rounds, no results file")
    parser.add_argument("--output", default="bench/results/bnn.md")
    args = parser.parse_args()
    runtime.configure(seed=0)
    models = ["mlp"] if args.quick else list(CLI_MODELS)
    rounds = 3 if args.quick else args.rounds
    lines = [
        "# BNN training: memory and time per step, standard vs low-memory",
        "",
        f"Batch {args.batch}; torch {torch.__version__}, {runtime.thread_count()} thread(s), "
        f"{platform.machine()}, {os.cpu_count()} CPU(s). Timing: median of {rounds} round-robin steps. "
        "Held = saved tensors + parameters + gradients + optimiser state of a real step; "
        "peak = resident-memory high-water mark over the step minus the RSS before it.",
        "",
        "| model | mode | model MiB | held MiB | held/model | peak RSS increase MiB | s/step | time ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for cli_name in models:
        name = CLI_MODELS[cli_name]
        times = time_modes(name, args.batch, rounds)
        medians = {mode: statistics.median(t) for mode, t in times.items()}
        ratio = medians["low_memory"] / medians["standard"]
        verdicts.append((cli_name, ratio))
        held = {}
        for mode in MODES:
            torch.manual_seed(0)
            model = zoo.build(name)
            modelled = total_bytes(memory_rows(model, args.batch, choices_for(mode)))
            measured = measure_step(model, mode, args.batch)
            held[mode] = measured.held_bytes
            peak = "n/a" if measured.peak_rss_bytes is None else f"{measured.peak_rss_bytes / MIB:.1f}"
            lines.append(
                f"| {cli_name} | {mode} | {modelled / MIB:.2f} | {measured.held_bytes / MIB:.2f} | "
                f"{measured.held_bytes / modelled:.4f} | {peak} | {medians[mode]:.3f} | "
                f"{'' if mode == 'standard' else f'{ratio:.2f}'} |"
            )
            print(lines[-1], flush=True)
        lines.append(f"| {cli_name} | **saving** | | **{held['standard'] / held['low_memory']:.2f}×** | | | | |")
    lines += ["", f"Time target (low-memory ≤ {TIME_TARGET}× standard): " + ", ".join(
        f"{n} {r:.2f}× {'PASS' if r <= TIME_TARGET else 'MISS'}" for n, r in verdicts)]
    print("\n".join(lines[-1:]))
    if not args.quick:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
