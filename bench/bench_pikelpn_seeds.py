"""Notebook 04's ladder (float → W4A4 → + QuantNorm → + Double Quantization → + DHQ) over several seeds.

One ladder takes one to two minutes on two CPU cores, too slow to repeat inside the notebook, so
this script trains it for each seed (the same seed for every rung: same initial weights where the
shapes agree, same batches) on one thread, and writes ``bench/results/pikelpn_seeds.json`` and
``pikelpn_seeds.md``. Notebook 04 reads the JSON: accuracy differences between rungs, with their
spread over seeds, instead of one run's differences inside one binomial standard error.

    .venv/bin/python bench/bench_pikelpn_seeds.py              # digits, seeds 0–4, about ten minutes
    .venv/bin/python bench/bench_pikelpn_seeds.py --seeds 3    # fewer seeds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from qatcore import data
from qatcore.cost.pikelpn import default_config, ladder_configs, paired_differences, seed_study
from qatcore.estimators.train import TrainConfig
from qatcore.optimizers import OptimizerConfig

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "pikelpn_seeds.json")
    args = parser.parse_args()
    dataset = data.load("digits", None)
    configs = ladder_configs(default_config(dataset.image_size, num_classes=dataset.num_classes))
    start = time.perf_counter()
    train_config = TrainConfig(OptimizerConfig("adam", lr=0.01), batch_size=128, epochs=args.epochs)
    accuracies = seed_study(dataset, train_config, configs, range(args.seeds))
    record = {
        "dataset": "digits",
        "test_images": len(dataset.y_test),
        "epochs": args.epochs,
        "optimizer": "adam",
        "lr": 0.01,
        "batch_size": 128,
        "seeds": list(range(args.seeds)),
        "test_accuracy": accuracies,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# Notebook 04's ladder over {args.seeds} seeds (digits, {args.epochs} epochs)",
        "",
        "| rung | test accuracy, mean ± sd (%) | vs the rung before, mean ± sd (points) |",
        "|---|---|---|",
    ]
    differences = paired_differences(accuracies)
    for name, values in accuracies.items():
        mean = 100 * sum(values) / len(values)
        sd = 100 * (sum((v - mean / 100) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
        step = differences.get(name)
        lines.append(
            f"| {name} | {mean:.1f} ± {sd:.1f} | {'' if step is None else f'{step.mean:+.2f} ± {step.sd:.2f}'} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
