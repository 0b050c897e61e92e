"""The ImageNet ResNet experiment end to end on a synthetic folder, and a step-time projection.

Runs ``qatcore.estimators.imagenet.run_imagenet`` (all four runs, evaluation, summary) on a synthetic
ImageNet-layout folder on this machine's device, timing each run, then times bare training steps
of the shipped config's model at its per-GPU batch (256 / 8 = 32) on random tensors and projects
the shipped config's wall time on 8 such devices (perfect scaling, data loading keeping up: a
lower bound). The agreement numbers of a synthetic run say nothing about the paper; they show that
the pipeline runs. Writes ``bench/results/imagenet.md`` (CPU) or ``imagenet_cuda.md``, and ``.json``.

    .venv/bin/python bench/bench_imagenet.py            # CPU here: a small ResNet-18, about a minute
    python3 bench/bench_imagenet.py --results DIR       # on a GPU machine: ResNet-50 at 224 pixels
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qatcore import distributed, runtime  # noqa: E402
from qatcore.data.image_folder import write_synthetic_folder  # noqa: E402
from qatcore.estimators.imagenet import ImageNetConfig, build_model, load_config, run_imagenet  # noqa: E402
from qatcore.estimators.train import TrainConfig, build_optimizer, train_step  # noqa: E402

SHIPPED = ROOT / "configs" / "imagenet_resnet50_dsq_sgd.toml"
#: per device kind: the synthetic folder, the experiment's settings, the timed model
SETTINGS = {
    "cuda": dict(
        folder=dict(classes=10, train_per_class=128, val_per_class=8, size=(320, 256)),
        config=dict(
            architecture="resnet50",
            image_size=224,
            batch_size=128,
            epochs=2,
            workers=12,
            recorded_weights=65536,
            record_every=1,
            eval_examples=80,
            eval_batch_size=80,
        ),
        timed=dict(architecture="resnet50", image_size=224),
        per_device_batch=32,
        steps=20,
    ),
    "cpu": dict(
        folder=dict(classes=3, train_per_class=16, val_per_class=4, size=(80, 64)),
        config=dict(
            architecture="resnet18",
            width_multiplier=0.25,
            image_size=64,
            batch_size=16,
            epochs=2,
            workers=1,
            recorded_weights=4096,
            record_every=1,
            eval_examples=12,
            eval_batch_size=12,
        ),
        timed=dict(architecture="resnet18", width_multiplier=0.25, image_size=64),
        per_device_batch=32,
        steps=5,
    ),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(config: ImageNetConfig, device: torch.device, batch: int, steps: int) -> float:
    """Median seconds of one training step of ``config``'s model on random images (no data loading)."""
    runtime.seed_everything(0)
    model = build_model(config, config.estimator, 1000).to(device)
    optimizer = build_optimizer(model, TrainConfig(config.optimizer))
    x = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    times = []
    for _ in range(steps + 3):  # three warm-up steps
        synchronize(device)
        started = time.perf_counter()
        train_step(model, optimizer, x, y, 1e-3)
        synchronize(device)
        times.append(time.perf_counter() - started)
    return sorted(times[3:])[len(times[3:]) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--results", default=str(ROOT / "bench" / "results"), help="where the tables go"
    )
    args = parser.parse_args()
    runtime.configure(seed=0)
    device = distributed.local_device(args.device)
    kind = SETTINGS[device.type]
    shipped = load_config(SHIPPED)
    with tempfile.TemporaryDirectory() as scratch:
        data = write_synthetic_folder(Path(scratch) / "data", **kind["folder"])
        config = ImageNetConfig(
            data_dir=str(data), out=str(Path(scratch) / "out"), device=str(device), **kind["config"]
        )
        started = time.perf_counter()
        result = run_imagenet(config, progress=False)
        experiment_seconds = time.perf_counter() - started
        summary = json.loads((Path(config.out) / "summary.json").read_text())
    steps = summary["steps"]
    timed = replace(shipped, **kind["timed"], data_dir=".")
    seconds = step_seconds(timed, device, kind["per_device_batch"], kind["steps"])
    examples = 1_281_167  # ILSVRC-2012 training images
    shipped_steps = shipped.epochs * (examples // shipped.batch_size)
    projected_hours = len(shipped.runs) * shipped_steps * seconds / 3600
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    record = {
        "device": name,
        "torch": torch.__version__,
        "synthetic_run": {
            "architecture": config.architecture,
            "image_size": config.image_size,
            "batch_size": config.batch_size,
            "steps_per_run": steps,
            "runs": len(result.runs),
            "seconds": round(experiment_seconds, 1),
            "images_per_second": round(
                len(result.runs) * steps * config.batch_size / experiment_seconds, 1
            ),
            "quantized_weight_agreement": summary["quantized_weight_agreement"],
            "jitter_agreement": summary["jitter_agreement"],
        },
        "step_seconds": {
            "architecture": timed.architecture,
            "width_multiplier": timed.width_multiplier,
            "image_size": timed.image_size,
            "batch_per_device": kind["per_device_batch"],
            "median_seconds": round(seconds, 5),
        },
    }
    if (
        timed.architecture == shipped.architecture and timed.image_size == shipped.image_size
    ):  # the shipped model
        record["projection"] = {
            "config": SHIPPED.name,
            "steps_per_run": shipped_steps,
            "runs": len(shipped.runs),
            "devices": 8,
            "hours_lower_bound": round(projected_hours, 1),
        }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = (
        "imagenet" if device.type == "cpu" else f"imagenet_{device.type}"
    )  # run_all.py links imagenet.md
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    run, step, projection = (
        record["synthetic_run"],
        record["step_seconds"],
        record.get("projection"),
    )
    lines = [
        f"# ImageNet ResNet experiment on {name}",
        "",
        "Written by `bench/bench_imagenet.py` (synthetic ImageNet-layout folder: the agreements below show the "
        "pipeline runs, not the paper's result).",
        "",
        "| what | value |",
        "|---|---|",
        f"| end to end: {run['runs']} runs × {steps} steps, {run['architecture']} at {run['image_size']} px, "
        f"global batch {run['batch_size']} | {run['seconds']} s ({run['images_per_second']} images/s, data loading and "
        "evaluation included) |",
        f"| quantized-weight agreement, adjusted STE vs DSQ (jitter baseline) | {run['quantized_weight_agreement']} "
        f"({run['jitter_agreement']}) |",
        f"| one training step, {step['architecture']} ×{step['width_multiplier']} at {step['image_size']} px, batch "
        f"{step['batch_per_device']}, random tensors | {1000 * step['median_seconds']:.1f} ms (median) |",
    ]
    if projection:
        lines.append(
            f"| projected `{projection['config']}` on {projection['devices']} such devices "
            f"({projection['runs']} runs × {projection['steps_per_run']} steps) | "
            f"≥ {projection['hours_lower_bound']} h (perfect scaling, data loading keeping up) |"
        )
    table = "\n".join([*lines, ""])
    (out / f"{stem}.md").write_text(table)
    print(table)
    return 0 if math.isfinite(seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
