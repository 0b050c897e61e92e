"""Latency of the exported MNIST CNN: three ONNX files against PyTorch eager, batch 1 and batch 256.

The paper's MNIST CNN (28×28 inputs, 2-bit conv kernels) in five forms, all on the CPU with one
thread (``torch.set_num_threads(1)``, onnxruntime's intra-op threads 1):

* ``eager (QAT)``: the training module itself, which re-quantizes its kernels on every call;
* ``eager (frozen)``: the same network with plain ``nn.Conv2d`` holding the quantized kernels;
* ``ORT float32``: the float32 ONNX file of the same network (``graph.as_float``);
* ``ORT INT4 QDQ``: the standard ``qatcore.export`` file (INT4 codes → DequantizeLinear → Conv);
* ``ORT INT8 QDQ``: the 8-bit variant (``int8=True``: UINT8 activations, INT8 weights), calibrated
  on 256 random inputs.

For each ONNX file the results also give its size, the integer kernels onnxruntime's optimized
graph runs (``onnx_run.integer_kernels``) and how far its outputs are from PyTorch's on the timed
inputs. After warm-up, each round times one block of calls of every variant round-robin (order
rotating each round), so load from other processes hits all alike. Reported: median time per call
over the rounds (min–max) and the median per-round ratio to the float32 ONNX file. Results go to
``bench/results/export.md`` and ``bench/results/export.json`` (read by notebook 06). Run from the
repository root:

    .venv/bin/python bench/bench_export.py            # about two minutes
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
from qatcore.export import graph, onnx_inspect, onnx_int8, onnx_qdq, onnx_run

BITS = 2
BATCHES = (1, 256)
CALLS = {1: 200, 256: 4}  # calls per timed block
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("eager (QAT)", "eager (frozen)", "ORT float32", "ORT INT4 QDQ", "ORT INT8 QDQ")
BASELINE = "ORT float32"


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


def onnx_files(model: nn.Module) -> dict[str, bytes]:
    """The three ONNX files of ``model``, serialized."""
    ops = graph.lower(model)
    calibration = np.random.default_rng(1).random((256, 1, 28, 28), dtype=np.float32)
    return {
        "ORT float32": onnx_qdq.build(graph.as_float(ops), (1, 28, 28)).SerializeToString(),
        "ORT INT4 QDQ": onnx_qdq.build(ops, (1, 28, 28)).SerializeToString(),
        "ORT INT8 QDQ": onnx_int8.build(ops, (1, 28, 28), calibration)[0].SerializeToString(),
    }


def variants(model: nn.Module, files: dict[str, bytes], threads: int) -> dict:
    plain = frozen(model)

    def eager(module):
        def call(x):
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        return call

    def ort(data: bytes):
        session = onnx_run.session(data, threads)
        return lambda x: session.run([onnx_inspect.OUTPUT], {onnx_inspect.INPUT: x})[0]

    return {
        "eager (QAT)": eager(model),
        "eager (frozen)": eager(plain),
        **{name: ort(data) for name, data in files.items()},
    }


def exactness(calls: dict, x: np.ndarray) -> dict[str, dict[str, float]]:
    """Each variant's largest |output difference| from the QAT module, and its prediction agreement."""
    reference = calls["eager (QAT)"](x)
    found = {}
    for name, call in calls.items():
        out = call(x)
        found[name] = {
            "max_abs_diff": float(np.abs(out - reference).max()),
            "prediction_agreement": float((out.argmax(1) == reference.argmax(1)).mean()),
        }
    return found


def measure(calls: dict, x: np.ndarray, block: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, one value per round."""
    for call in calls.values():
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


def integer_extensions() -> str:
    """The CPU's vector extensions that integer kernels use (Linux only), or ``unknown``."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return ", ".join(found) or "none of avx2/avx512/vnni"


def table(results: dict, facts: dict, threads: int, load: tuple[float, float]) -> str:
    lines = [
        "# Export latency: three ONNX files and PyTorch eager (MNIST CNN, 2-bit kernels, 28×28)",
        "",
        f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {threads} thread for every variant; integer "
        f"extensions: {facts['cpu_extensions']} (onnxruntime's 8-bit kernels gain most with VNNI). "
        f"The machine was shared with other jobs: 1-minute load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after. Rounds interleave the variants, so load slows all of them alike, "
        "but absolute times are only indicative: compare rows, and rerun on a quiet machine.",
        "",
        "## The files",
        "",
        "| file | bytes | integer kernels onnxruntime runs | max abs diff to PyTorch | agreement |",
        "|---|---:|---|---:|---:|",
    ]
    for name in VARIANTS:
        if name not in facts["sizes"]:
            continue
        kernels = facts["integer_kernels"][name]
        shown = ", ".join(f"{k} ×{v}" for k, v in kernels.items()) or "none (float Conv/Gemm)"
        exact = facts["exactness"][name]
        lines.append(
            f"| {name} | {facts['sizes'][name]:,} | {shown} | {exact['max_abs_diff']:.2g} | "
            f"{exact['prediction_agreement']:.3f} |"
        )
    lines += [
        "",
        f"Agreement: share of the {facts['examples']} timed batch-256 inputs (uniform noise, not "
        "images) whose arg-max matches the QAT module's.",
        "",
        "## Latency",
        "",
        f"| batch | variant | median ms / call | min–max ms | {BASELINE} / this |",
        "|---:|---|---:|---:|---:|",
    ]
    for batch, times in results.items():
        for name in VARIANTS:
            ratios = [q / t for q, t in zip(times[BASELINE], times[name], strict=True)]
            lines.append(
                f"| {batch} | {name} | {1e3 * statistics.median(times[name]):.3f} | "
                f"{1e3 * min(times[name]):.3f}–{1e3 * max(times[name]):.3f} | "
                f"{statistics.median(ratios):.2f}× |"
            )
    lines += [
        "",
        f"Median over {len(next(iter(results.values()))[BASELINE])} rounds; the last column is the "
        f"median per-round ratio (above 1: faster than the {BASELINE} file). "
        "Generated by `bench/bench_export.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds; print, write nothing")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args(argv)
    runtime.configure(seed=0, threads=1)
    threads = 1
    torch.set_num_threads(threads)
    model = MNISTCNN(bits=BITS, image_size=28).eval()
    files = onnx_files(model)
    calls = variants(model, files, threads)
    rng = np.random.default_rng(0)
    inputs = {batch: rng.random((batch, 1, 28, 28), dtype=np.float32) for batch in BATCHES}
    facts = {
        "sizes": {name: len(data) for name, data in files.items()},
        "integer_kernels": {name: onnx_run.integer_kernels(data) for name, data in files.items()},
        "exactness": exactness(calls, inputs[BATCHES[-1]]),
        "examples": BATCHES[-1],
        "cpu_extensions": integer_extensions(),
    }
    load_before = os.getloadavg()[0]
    results = {}
    for batch in BATCHES:
        block = max(1, CALLS[batch] // (10 if args.quick else 1))
        results[batch] = measure(calls, inputs[batch], block, 3 if args.quick else args.rounds)
    text = table(results, facts, threads, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "export.md").write_text(text)
        summary = {
            str(b): {n: statistics.median(t[n]) * 1e3 for n in VARIANTS} for b, t in results.items()
        }
        (RESULTS / "export.json").write_text(
            json.dumps(
                {
                    "threads": threads,
                    "rounds": args.rounds,
                    "load_average": [load_before, os.getloadavg()[0]],
                    "median_ms": summary,
                    **facts,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
