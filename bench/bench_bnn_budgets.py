"""The streamed low-memory step's trade of time for memory: peak and time per step at several chunk sizes and budgets.

The streamed step (``qatcore.bnn.streamed``) bounds its working memory by four settings: ``ROW_VALUES`` (values of
a stage's largest per-example tensor in one chunk of rows), ``OUTPUT_SHARE`` (how much of a binary layer's int16
output is kept while its batch norm's statistics are taken, rather than recomputed), ``GRADIENT_SHARE`` (how much
of the float16 gradients between stages is kept, rather than recomputed) and ``CONV_BLOCK`` (values of a large
convolution's weight, and of its float32 gradient sum, made at a time). Smaller ones lower the peak and cost time.
This script measures one model (CNV at batch 100 by default) at several settings, through
``streamed.budgets``: the peak resident memory of training in fresh processes (``measured_peak``, the median), and
the time per step against the standard step, timed in rounds in one process (one standard step, then one
low-memory step, the order alternating, setting after setting; a step's time is the process's CPU time). What the step
holds (saved tensors, parameters, gradients, optimiser state) does not depend on the settings; it is measured once.
Every setting's results are the same, bit for bit (``tests/test_bnn_streamed.py``).

Targets (the issue's, as in ``bench_bnn.py``): peak at most 1.3× held (CNV, BinaryNet), step time at most 1.5× the
standard step. The table says which settings meet each, and whether any meets both. The MLP (``--model bnn_mlp``,
written to ``bnn_budgets_bnn_mlp.md``) is judged by its own target instead, a peak at least 2.5× below the standard
step's: at the default chunk its batch is one chunk and it trains layer by layer; smaller chunks stream it.

    .venv/bin/python bench/bench_bnn_budgets.py            # about 10 minutes on 2 CPU cores
    .venv/bin/python bench/bench_bnn_budgets.py --quick    # two settings, 2 rounds, one process each; prints only
    .venv/bin/python bench/bench_bnn_budgets.py --model bnn_mlp   # a minute or two
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_bnn import BATCH, HELD_TARGET, PEAK_TARGET, TIME_TARGET, WARM_UP
from tables import publish

from qatcore import runtime, zoo
from qatcore.bnn import streamed
from qatcore.bnn.measure import measure_step, measured_peak
from qatcore.bnn.models import set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.plots import power_of_two_label
from qatcore.bnn.train import training_step

MIB = 2**20
RESULTS = Path("bench/results/bnn_budgets.md")
BLOCK = streamed.CONV_BLOCK
DEFAULT = (streamed.ROW_VALUES, streamed.OUTPUT_SHARE, streamed.GRADIENT_SHARE, BLOCK)
#: (ROW_VALUES, OUTPUT_SHARE, GRADIENT_SHARE, CONV_BLOCK): the defaults first, then smaller chunks and budgets; the
#: last two recompute every output and gradient (shares 0) and make large convolutions' weights in smaller blocks,
#: whose float32 copies and sums bound the peak once the chunks are small
SETTINGS = [
    DEFAULT,
    (1 << 18, 0.3, 0.2, BLOCK),
    (1 << 17, 0.6, 0.45, BLOCK),
    (1 << 17, 0.2, 0.2, BLOCK),
    (1 << 17, 0.1, 0.1, BLOCK),
    (1 << 16, 0.2, 0.2, BLOCK),
    (1 << 16, 0.05, 0.05, BLOCK),
    (1 << 17, 0.0, 0.0, 1 << 16),
    (1 << 16, 0.0, 0.0, 1 << 15),
]
#: the MLP's: the default (its batch of 100 is one chunk, so it trains layer by layer), then chunks of 83, 41 and 20
#: rows (784 input values each), which stream it, at the default shares
MLP_SETTINGS = [DEFAULT, *((1 << k, *DEFAULT[1:]) for k in (16, 15, 14))]


def as_budgets(setting: tuple[int, float, float, int]) -> dict:
    row_values, output_share, gradient_share, conv_block = setting
    return {
        "row_values": row_values,
        "output_share": output_share,
        "gradient_share": gradient_share,
        "conv_block": conv_block,
    }


def time_settings(name: str, batch: int, settings: list, rounds: int) -> list[tuple[list, list]]:
    """Per setting, CPU seconds of the standard step and of the low-memory step at that setting: after a warm-up
    step at the setting, ``rounds`` rounds of one step of each mode (the order alternating)."""
    models = {}
    for mode in ("standard", "low_memory"):
        torch.manual_seed(0)
        model = set_mode(zoo.build(name), mode).train()
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((batch, *model.input_shape), generator=generator) * 2 - 1
        y = torch.randint(0, 10, (batch,), generator=generator)
        models[mode] = (model, make_optimizer(model, mode), x, y)
        for _ in range(WARM_UP):
            training_step(*models[mode])
    timed = []
    for setting in settings:
        seconds: dict[str, list[float]] = {"standard": [], "low_memory": []}
        with streamed.budgets(**as_budgets(setting)):
            training_step(*models["low_memory"])  # the new chunk shapes' kernels
            for r in range(rounds):
                for mode in ("standard", "low_memory")[:: 1 if r % 2 == 0 else -1]:
                    started = time.process_time()
                    training_step(*models[mode])
                    seconds[mode].append(time.process_time() - started)
        timed.append((seconds["standard"], seconds["low_memory"]))
    return timed


def lines_of(record: dict) -> list[str]:
    held, standard_peak = record["held_bytes"], record["standard_peak_bytes"]
    lines = [
        f"# BNN training: the streamed step's memory against its time ({record['model']}, batch {record['batch']})",
        "",
        f"Adam; torch {record['torch']}, {record['threads']} thread(s), {record['machine']}, {record['cpus']} CPU(s). "
        f"Held (saved tensors + parameters + gradients + optimiser state, the same at every setting): "
        f"{held / MIB:.2f} MiB. Standard step's peak: {standard_peak / MIB:.1f} MiB. Peak = resident-memory "
        f"high-water mark of training two steps in a fresh process over its resident set before the model was "
        f"built, the median of {record['peak_runs']} processes per setting; time ratio = the median over "
        f"{record['rounds']} rounds of the low-memory step's CPU time over the standard step's in the same round "
        "(one step of each, the order alternating; each setting's rounds in turn, after a warm-up step at it; "
        "quartiles beside it). Settings: `ROW_VALUES`, `OUTPUT_SHARE`, `GRADIENT_SHARE`, `CONV_BLOCK` of "
        "`qatcore.bnn.streamed` (through `streamed.budgets`); the first row is the default.",
        "",
        "| row values | output share | gradient share | conv block | peak MiB | peak/held | peak saving | time ratio "
        "| quartiles |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in record["settings"]:
        q = s["time_ratio_quartiles"]
        lines.append(
            f"| {power_of_two_label(s['row_values'])} | {s['output_share']:.2f} | {s['gradient_share']:.2f} | "
            f"{power_of_two_label(s['conv_block'])} | {s['peak_bytes'] / MIB:.1f} | {s['peak_bytes'] / held:.2f} | {standard_peak / s['peak_bytes']:.1f}× | "
            f"{s['time_ratio']:.2f} | {q[0]:.2f}–{q[2]:.2f} |"
        )
    lowest = min(record["settings"], key=lambda s: s["peak_bytes"])
    if record["model"] in HELD_TARGET:
        target = HELD_TARGET[record["model"]]
        memory = [s for s in record["settings"] if s["peak_bytes"] / held <= target]
        goal = f"peak ≤ {target}× held"
    else:  # judged by its peak saving
        saving = 1 / PEAK_TARGET[record["model"]]
        memory = [s for s in record["settings"] if standard_peak / s["peak_bytes"] >= saving]
        goal = f"peak saving ≥ {saving:g}×"
    both = [s for s in memory if s["time_ratio"] <= TIME_TARGET]
    lines += [
        "",
        f"- Settings with {goal}: {len(memory)} of {len(record['settings'])}; the lowest peak, "
        f"{lowest['peak_bytes'] / held:.2f}× held ({standard_peak / lowest['peak_bytes']:.1f}× below the standard "
        f"step's), costs {lowest['time_ratio']:.2f}× the standard step.",
        f"- Criterion (the issue's): {goal} at a time ratio ≤ {TIME_TARGET}× at some setting: "
        f"{'PASS' if both else 'MISS'}",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnv", choices=sorted({*HELD_TARGET, "bnn_mlp"}))
    parser.add_argument("--rounds", type=int, help="default: 5 (the MLP's 30 ms steps: 40)")
    parser.add_argument(
        "--peak-runs",
        type=int,
        help="fresh processes per peak (median); default: 3 (the MLP, whose few MiB vary more: 9)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="two settings, 2 rounds, one process each"
    )
    parser.add_argument(
        "--output", type=Path, help="default: bnn_budgets.md (CNV), else bnn_budgets_<model>.md"
    )
    args = parser.parse_args()
    runtime.configure(seed=0, threads=1)
    name, batch = args.model, BATCH[args.model]
    small = name == "bnn_mlp"
    args.rounds = args.rounds or (40 if small else 5)
    args.peak_runs = args.peak_runs or (9 if small else 3)
    if args.output is None:
        args.output = RESULTS if name == "cnv" else RESULTS.with_name(f"bnn_budgets_{name}.md")
    every = MLP_SETTINGS if small else SETTINGS
    settings = every[:2] if args.quick else every
    rounds, peak_runs = (2, 1) if args.quick else (args.rounds, args.peak_runs)
    timed = time_settings(name, batch, settings, rounds)
    torch.manual_seed(0)
    record = {
        "model": name,
        "batch": batch,
        "rounds": rounds,
        "peak_runs": peak_runs,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "held_bytes": measure_step(zoo.build(name), "low_memory", batch).held_bytes,
        "standard_peak_bytes": statistics.median(
            measured_peak(name, "standard", batch) for _ in range(peak_runs)
        ),
        "settings": [],
    }
    for setting, (standard, seconds) in zip(settings, timed, strict=True):
        ratios = [lo / st for lo, st in zip(seconds, standard, strict=True)]
        peaks = [
            measured_peak(name, "low_memory", batch, budgets=as_budgets(setting))
            for _ in range(peak_runs)
        ]
        record["settings"].append(
            {
                **as_budgets(setting),
                "peak_bytes": statistics.median(peaks),
                "peaks": peaks,
                "time_ratio": statistics.median(ratios),
                "standard_seconds_per_step": statistics.median(standard),
                "time_ratio_quartiles": statistics.quantiles(ratios, n=4)
                if len(ratios) > 1
                else ratios * 3,
                "seconds_per_step": statistics.median(seconds),
            }
        )
        print(record["settings"][-1], flush=True)
    publish(lines_of(record), args.output, args.quick, record)


if __name__ == "__main__":
    main()
