"""Time to count a ResNet-50 (224×224, batch 1): ``qatcore.cost.ace.count`` against torch's FlopCounterMode.

fvcore is not installed; ``torch.utils.flop_counter.FlopCounterMode`` (built into torch) is the peer.
Both run the model once on the same input in the same process: the peer counts the FLOPs of
convolutions and matrix products; qatcore counts every operation (MACs, batch norm, ReLU, pooling,
residual additions, bias, quantisation scaling) with its bit widths and costs it under ACE, ACEv2
and the 45 nm energy table. Each round times one count of every variant, round-robin with the order
rotating, so load from other processes hits all alike. Reported: median time (min–max over rounds)
and the median per-round ratio to the peer.

Acceptance criterion: ``qatcore.cost.ace.count`` (default method, torch.fx) takes at most 2× the peer;
the script exits 1 otherwise. Run from the repository root:

    .venv/bin/python bench/bench_ace.py            # about half a minute; writes bench/results/ace.md
    .venv/bin/python bench/bench_ace.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tables import arguments, publish
from torch.utils.flop_counter import FlopCounterMode

from qatcore import runtime
from qatcore.architectures import ResNet50
from qatcore.cost import ace

LIMIT = 2.0
RESULTS = Path(__file__).resolve().parent / "results" / "ace.md"


def peer(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 per MAC) of ``model`` on ``x`` by torch's FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, RESULTS, argv)
    runtime.configure(seed=0)
    model = ResNet50().eval()
    x = model.example_input()
    variants = {
        "FlopCounterMode (peer)": lambda: peer(model, x),
        "qatcore.cost.ace.count (fx, default)": lambda: ace.count(model, x, method="fx"),
        "qatcore.cost.ace.count (hooks)": lambda: ace.count(model, x, method="hooks"),
    }
    names = list(variants)
    for run in variants.values():  # warm-up
        run()
    times = {name: [] for name in names}
    repeats = 3 if args.quick else args.repeats
    for index in range(repeats):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    flops = peer(model, x)
    report = ace.count(model, x)
    assert 2 * report.totals["macs"] == flops, (report.totals["macs"], flops)
    base = names[0]
    lines = [
        "# Counting a ResNet-50 (224×224, batch 1): qatcore.cost.ace vs torch FlopCounterMode",
        "",
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
        f"{repeats} rounds (median, min–max). Both count {report.totals['macs']:,} MACs "
        f"(FlopCounterMode: {flops:,} FLOPs = 2 per MAC); qatcore also counts "
        f"{report.totals['operations'] - report.totals['macs']:,} element-wise operations "
        f"in {len(report.layer_types)} layers, costed under ACE, ACEv2 and 45 nm energy.",
        "",
        "| counter | time (s) | ratio to peer |",
        "|---|---:|---:|",
    ]
    ok = True
    for name in names:
        ratio = statistics.median(t / p for t, p in zip(times[name], times[base], strict=True))
        lines.append(
            f"| {name} | {statistics.median(times[name]):.3f} ({min(times[name]):.3f}–"
            f"{max(times[name]):.3f}) | {ratio:.2f} |"
        )
        if "default" in name:
            ok = ratio <= LIMIT
    lines += [
        "",
        f"Criterion: the default count takes at most {LIMIT:g}× the peer: **{'PASS' if ok else 'FAIL'}**",
    ]
    publish(lines, args.output, args.quick)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
