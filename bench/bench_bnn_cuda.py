"""BNN training memory on a GPU: the CUDA allocator's peak of both modes, beside the CPU's figures.

For the MLP, CNV and BinaryNet at batch 100 (as ``bench_bnn.py``), each mode trains three steps on one CUDA device
(``qatcore.bnn.measure.peak_on_gpu``): the allocator's high-water mark over what was allocated before the model
existed, and the median seconds per step. The table sets them beside the CPU's peaks and held bytes from
``bench/results/bnn.json``. Writes ``bench/results/bnn_cuda.md`` and ``bnn_cuda.json``. Needs a CUDA device; a
machine without one is told so, and nothing is written. A minute or two on one GPU.

    .venv/bin/python bench/bench_bnn_cuda.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from qatcore.bnn.measure import peak_on_gpu

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
MODELS = ("bnn_mlp", "cnv", "binarynet")
MODES = ("standard", "low_memory")


def table(record: dict, cpu: dict) -> list[str]:
    lines = [
        f"# BNN training memory on {record['device']}",
        "",
        f"Written by `bench/bench_bnn_cuda.py` (torch {record['torch']}): {record['steps']} training steps per model and "
        f"mode at batch {record['batch']}, Adam; GPU peak = `torch.cuda.max_memory_allocated` over what was allocated "
        "before the model existed (weights, optimiser state, every forward and backward); CPU peak and held bytes "
        "from `bench/results/bnn.json`.",
        "",
        "| model | mode | GPU peak MiB | GPU ms/step | CPU peak MiB | CPU held MiB | GPU saving | CPU saving |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in record["models"].items():
        on_cpu = cpu.get(name, {})
        for mode in MODES:
            gpu, host = entry[mode], on_cpu.get(mode, {})
            saving = {
                "GPU": entry["standard"]["peak_bytes"] / entry["low_memory"]["peak_bytes"],
                "CPU": (
                    on_cpu["standard"]["peak_bytes"] / on_cpu["low_memory"]["peak_bytes"]
                    if on_cpu.get("low_memory", {}).get("peak_bytes")
                    else None
                ),
            }
            cells = [
                f"{gpu['peak_bytes'] / MIB:.1f}",
                f"{1000 * gpu['seconds_per_step']:.1f}",
                f"{host['peak_bytes'] / MIB:.1f}" if host.get("peak_bytes") else "n/a",
                f"{host['held_bytes'] / MIB:.1f}" if host.get("held_bytes") else "n/a",
            ]
            if mode == "low_memory":
                cells += [
                    f"{saving['GPU']:.1f}×",
                    "n/a" if saving["CPU"] is None else f"{saving['CPU']:.1f}×",
                ]
            else:
                cells += ["", ""]
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per model and mode")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "bench_bnn_cuda: no CUDA device here; bench/bench_bnn.py measures the CPU",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda")
    record = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "batch": args.batch,
        "steps": args.steps,
        "models": {
            name: {
                mode: peak_on_gpu(name, mode, args.batch, device, steps=args.steps)
                for mode in MODES
            }
            for name in MODELS
        },
    }
    results = Path(args.results)
    cpu_file = results / "bnn.json"
    cpu = json.loads(cpu_file.read_text())["models"] if cpu_file.exists() else {}
    (results / "bnn_cuda.json").write_text(json.dumps(record, indent=1) + "\n")
    text = "\n".join(table(record, cpu)) + "\n"
    (results / "bnn_cuda.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
