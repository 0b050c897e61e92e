"""Latency of the exported MNIST CNN: onnxruntime against PyTorch eager, batch 1 and batch 256.

The paper's MNIST CNN (28×28 inputs, 2-bit conv kernels) in three forms, all on the CPU with the
same thread count (``qatcore.runtime.configure``: 2 unless ``$QATCORE_THREADS``; onnxruntime's
intra-op threads set to match torch's):

* ``eager (QAT)``: the training module itself, which re-quantizes its kernels on every call;
* ``eager (frozen)``: the same network with plain ``nn.Conv2d`` holding the quantized kernels;
* ``onnxruntime``: the ``qatcore.export`` ONNX file (standard QDQ: INT4 codes → DequantizeLinear → Conv).

After warm-up, each round times one block of calls of every variant round-robin (order rotating
each round), so load from other processes hits all alike. Reported: median time per call
(min–max over rounds) and the median per-round ratio eager (QAT) / onnxruntime. The outputs of
the three are checked to agree before timing. Results go to ``bench/results/export.md`` and
``bench/results/export.json`` (read by notebook 06). Run from the repository root:

    .venv/bin/python bench/bench_export.py            # about a minute
    .venv/bin/python bench/bench_export.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from qatcore import runtime
from qatcore.estimators.layers import quantized_layers
from qatcore.estimators.models import MNISTCNN
from qatcore.export import graph, onnx_inspect, onnx_qdq, onnx_run

BITS = 2
BATCHES = (1, 256)
CALLS = {1: 200, 256: 4}  # calls per timed block
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("eager (QAT)", "eager (frozen)", "onnxruntime")


def frozen(model: nn.Module) -> nn.Module:
    """A copy with every quantized conv replaced by a plain ``nn.Conv2d`` holding ``Q(w)``."""
    copy_ = copy.deepcopy(model)
    for name, layer in quantized_layers(copy_).items():
        conv = nn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding
        )
        with torch.no_grad():
            conv.weight.copy_(layer.weight_levels())
            conv.bias.copy_(layer.bias)
        setattr(copy_, name, conv)
    return copy_.eval()


def variants(threads: int) -> dict:
    model = MNISTCNN(bits=BITS, image_size=28).eval()
    session = onnx_run.session(
        onnx_qdq.build(graph.lower(model), (1, 28, 28)).SerializeToString(), threads
    )
    plain = frozen(model)

    def eager(module):
        def call(x):
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        return call

    return {
        "eager (QAT)": eager(model),
        "eager (frozen)": eager(plain),
        "onnxruntime": lambda x: session.run([onnx_inspect.OUTPUT], {onnx_inspect.INPUT: x})[0],
    }


def measure(calls: dict, x: np.ndarray, block: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, one value per round."""
    reference = calls["eager (QAT)"](x)
    for name, call in calls.items():
        if not np.allclose(call(x), reference, atol=1e-4):
            raise SystemExit(f"{name} disagrees with PyTorch eager")
        for _ in range(3):
            call(x)
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(block):
                calls[name](x)
            times[name].append((time.perf_counter() - start) / block)
    return times


def table(results: dict, threads: int, load: tuple[float, float]) -> str:
    lines = [
        "# Export latency: onnxruntime vs PyTorch eager (MNIST CNN, 2-bit kernels, 28×28)",
        "",
        f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {threads} thread(s) for both. "
        f"1-minute load average {load[0]:.1f} before, {load[1]:.1f} after (other processes slow eager "
        "PyTorch more than onnxruntime: compare rows only from a quiet machine).",
        "",
        "| batch | variant | median ms / call | min–max ms | eager (QAT) / this |",
        "|---:|---|---:|---:|---:|",
    ]
    for batch, times in results.items():
        for name in VARIANTS:
            ratios = [q / t for q, t in zip(times["eager (QAT)"], times[name], strict=True)]
            lines.append(
                f"| {batch} | {name} | {1e3 * statistics.median(times[name]):.3f} | "
                f"{1e3 * min(times[name]):.3f}–{1e3 * max(times[name]):.3f} | "
                f"{statistics.median(ratios):.2f}× |"
            )
    lines += [
        "",
        "Median over rounds; the last column is the median per-round ratio (above 1: faster "
        "than the QAT module). Generated by `bench/bench_export.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds; print, write nothing")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    runtime.configure(seed=0)
    threads = torch.get_num_threads()
    calls = variants(threads)
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    results = {}
    for batch in BATCHES:
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        block = max(1, CALLS[batch] // (10 if args.quick else 1))
        results[batch] = measure(calls, x, block, 3 if args.quick else args.rounds)
    text = table(results, threads, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "export.md").write_text(text)
        summary = {
            str(b): {n: statistics.median(t[n]) * 1e3 for n in VARIANTS} for b, t in results.items()
        }
        (RESULTS / "export.json").write_text(
            json.dumps({"threads": threads, "median_ms": summary}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
