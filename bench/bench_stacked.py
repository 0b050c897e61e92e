"""Runs of the first paper's table trained one by one against the same runs stacked into one network.

One seed's SGD runs that take the same steps (``ablations.run_named`` with main, jitter, no_warp,
bits_1 and bits_4: 8 runs of the MNIST CNN, with their recording and every metric) are trained
twice per round, one by one and as one stacked network (``stack_size=8``,
``qatcore.estimators.stacked``), in two settings:

* the paper's scale: 28×28 images at batch 600 (random images of MNIST's shape, as
  ``bench_recording.py`` makes them; a block is ``--epochs`` epochs of ``--steps-per-epoch`` steps);
* the course's scale: scikit-learn's 8×8 digits at batch 64, one epoch.

Reported per setting: the median milliseconds per run and step of each way (min–max over the
rounds), the median of the per-round speed-ups, and the largest difference between the two ways'
metrics (quantized weight agreement, alignment error, change-point agreement of every pair: the
stacked runs follow the one-by-one runs within float tolerance, so these differ in low digits).

``--device cuda`` runs it on a GPU, where a step of this small CNN is mostly kernel launches and
stacking is meant to pay; on a CPU, stacking saves the per-run overhead of the small digits steps.

    QATCORE_THREADS=1 .venv/bin/python bench/bench_stacked.py              # 5–8 minutes on 2 cores
    .venv/bin/python bench/bench_stacked.py --device cuda --output bench/results/stacked_cuda.md
    .venv/bin/python bench/bench_stacked.py --quick                       # smoke run, prints only
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_recording import synthetic_mnist
from bench_training import machine_facts
from tables import publish

from qatcore import data as datasets
from qatcore import runtime
from qatcore.estimators import ablations
from qatcore.estimators.equivalence import EquivalenceConfig, digits_optimizer

#: one seed's SGD runs of the same length: main, jitter and no_warp share the DSQ run (4 runs),
#: bits_1 and bits_4 are a pair each; all 8 in one stack
RUNS = ("main", "jitter", "no_warp", "bits_1", "bits_4")
STACK = 8
METRICS = ("quantized_weight_agreement", "alignment_error", "change_point_agreement")
#: our float tolerance on those metrics between the two ways, at these run lengths (a level flips
#: where a latent weight lies within float rounding of a threshold, as between two CPUs' kernels)
TOLERANCE = 1e-3
RESULTS = Path(__file__).resolve().parent / "results" / "stacked.md"


def settings(args: argparse.Namespace) -> dict[str, tuple[EquivalenceConfig, datasets.Dataset]]:
    """Each setting's config (one seed, SGD) and data."""
    paper = EquivalenceConfig(
        estimator="dsq",
        optimizer=digits_optimizer("sgd", 1e-3),
        batch_size=600,
        epochs=args.epochs,
        device=args.device,
    )
    digits = EquivalenceConfig(estimator="dsq", epochs=1, device=args.device)
    return {
        "MNIST CNN 28×28, batch 600": (paper, synthetic_mnist(args.steps_per_epoch)),
        "digits 8×8, batch 64": (digits, datasets.load_digits()),
    }


def block(
    config: EquivalenceConfig, data: datasets.Dataset, stack_size: int | None
) -> tuple[float, dict]:
    """One seed's runs, trained and compared: (seconds, pairs)."""
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    pairs = ablations.run_named(config, RUNS, data, progress=False, stack_size=stack_size)
    return time.perf_counter() - start, pairs


def largest_difference(a: dict, b: dict) -> float:
    """The largest absolute difference of ``METRICS`` between two ``run_named`` results."""
    return max(abs(a[run]["ours"][m] - b[run]["ours"][m]) for run in a for m in METRICS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--steps-per-epoch", type=int, default=2, help="default 2")
    parser.add_argument("--epochs", type=int, default=2, help="paper-scale epochs (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 steps, print only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps_per_epoch, args.epochs = 1, 2, 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing measured", file=sys.stderr)
        return 2
    runtime.configure(seed=0)
    load = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for name, (config, data) in settings(args).items():
        per_run = config.epochs * -(-len(data.x_train) // config.batch_size)
        steps = STACK * per_run  # every run's steps
        block(config, data, STACK)  # warm-up (and the sympy compilation of every estimator)
        times: dict[str, list[float]] = {"one by one": [], "stacked": []}
        differences = []
        for round_ in range(args.repeats):
            order = [None, STACK] if round_ % 2 == 0 else [STACK, None]
            results = {}
            for stack_size in order:
                gc.collect()
                seconds, pairs = block(config, data, stack_size)
                way = "stacked" if stack_size else "one by one"
                times[way].append(seconds / steps)
                results[way] = pairs
                print(f"{name}, round {round_ + 1}, {way}: {seconds:.1f} s", file=sys.stderr)
            differences.append(largest_difference(results["one by one"], results["stacked"]))
        speedup = statistics.median(
            a / b for a, b in zip(times["one by one"], times["stacked"], strict=True)
        )
        cells = [
            f"{1e3 * statistics.median(t):.1f} ({1e3 * min(t):.1f}–{1e3 * max(t):.1f})"
            for t in times.values()
        ]
        rows.append(
            f"| {name} | {per_run} | {' | '.join(cells)} | {speedup:.2f}× | {max(differences):.2g} |"
        )
    within = all(float(row.rsplit("|", 2)[1]) <= TOLERANCE for row in rows)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    lines = [
        "# The first paper's runs, one by one and stacked",
        "",
        "Written by `bench/bench_stacked.py`" + (" (`--quick`)" if args.quick else "") + ".",
        "",
        *machine_facts(),
        f"- device: {args.device}" + (f" ({gpu})" if gpu else ""),
        f"- load average before the run: {load} (1, 5, 15 minutes)",
        "",
        f"One seed's SGD runs of the same length ({', '.join(RUNS)}: 8 runs with their recording "
        f"and metrics), trained one by one and as one stacked network; {args.repeats} rounds, the "
        "order alternating. Times are per run and step, median (min–max).",
        "",
        "| setting | steps per run | one by one, ms | stacked, ms | speed-up (median) "
        "| largest metric difference |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Criterion: every metric of the stacked runs within {TOLERANCE:g} of the one-by-one runs' "
        f"(float tolerance): **{'PASS' if within else 'FAIL'}**. Speed is reported, not judged: "
        "the target is the whole table in minutes on a GPU.",
    ]
    publish(lines, args.output, args.quick)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
