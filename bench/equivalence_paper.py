"""The first paper's equivalence table with every metric, ours and the authors', at paper settings.

DSQ and PWL × SGD and Adam, the authors' named runs (``qatcore.estimators.ablations``), from
``configs/paper_mnist_{sgd,adam}.toml`` on Fashion-MNIST IDX files (MNIST is not on this machine):

    PYTHONPATH=$PWD QATCORE_THREADS=1 python bench/equivalence_paper.py \\
        --data-dir /usr/share/datasets/fashion-mnist [--epochs 5] [--seeds 1] [--runs ...] \\
        [--train-images N --test-images N --cut "what was left out"]

writes ``bench/results/equivalence_paper/<estimator>-<optimizer>.json`` and the markdown table
``bench/results/equivalence_paper.md`` (the command and what it cut from the full setting first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from qatcore import data as datasets
from qatcore.estimators import ablations

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"


def _cell(summary: dict | None) -> str:
    if summary is None:
        return "n/a"
    return (
        f"{summary['mean']:.4f}"
        if summary["n"] == 1
        else f"{summary['mean']:.4f} ± {summary['sd']:.4f}"
    )


def table(report: dict) -> str:
    """One markdown table of a report of ``ablations.run_seeds``: a row per metric, a column per run."""
    runs = list(report["runs"])
    first = report["runs"][runs[0]]
    head = f"| metric | {' | '.join(runs)} |\n|---|{'---|' * len(runs)}"
    settings = [report["runs"][r] for r in runs]
    rows = [
        "| α | " + " | ".join(str(s["alpha"]) for s in settings) + " |",
        "| lr, epochs | " + " | ".join(f"{s['lr']:g}, {s['epochs']}" for s in settings) + " |",
    ]
    for group, label in (
        ("authors", "authors'"),
        ("ours", "ours"),
        ("test_accuracy", "test accuracy"),
    ):
        for metric in first[group]:
            cells = " | ".join(_cell(report["runs"][r][group][metric]) for r in runs)
            rows.append(f"| {label}: {metric} | {cells} |")
    return "\n".join([head, *rows])


def _write(argv: list[str], args: argparse.Namespace, sections: list[str]) -> None:
    command = "PYTHONPATH=$PWD QATCORE_THREADS=1 python bench/equivalence_paper.py " + " ".join(
        argv
    )
    text = (
        f"# Paper 1: every metric at paper settings ({args.dataset})\n\n"
        f"Written by `bench/equivalence_paper.py`:\n\n    {command}\n\n"
        f"Cut from the full setting (5 epochs, every named run, several seeds): {args.cut or 'nothing'}.\n\n"
        "Pairs compare the custom-estimator run with each named run (`qatcore.estimators.ablations`). "
        "The authors' metrics follow mschoenb97/flax, examples/mnist/run_experiments.py; ours, "
        "`qatcore.estimators.trajectory`.\n\n" + "\n".join(sections)
    )
    (OUT / "equivalence_paper.md").write_text(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", required=True, help="folder of Fashion-MNIST (or MNIST) IDX files"
    )
    parser.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's 5")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument(
        "--runs", nargs="+", default=None, help="default: every named run of the config"
    )
    parser.add_argument("--estimators", nargs="+", default=["dsq", "pwl"])
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--train-images", type=int, default=None, help="the first N training images (default: all)"
    )
    parser.add_argument(
        "--test-images", type=int, default=None, help="the first N test images (default: all)"
    )
    parser.add_argument(
        "--cut", default="", help="what this run leaves out of the full setting, for the table"
    )
    args = parser.parse_args(argv)
    folder = OUT / "equivalence_paper"
    folder.mkdir(parents=True, exist_ok=True)
    data = datasets.subset(
        datasets.load(args.dataset, args.data_dir), args.train_images, args.test_images
    )
    sections = []
    for optimizer in args.optimizers:
        config, runs, _ = ablations.load_config(ROOT / f"configs/paper_mnist_{optimizer}.toml")
        config = replace(
            config,
            dataset=args.dataset,
            data_dir=args.data_dir,
            device=args.device,
            epochs=args.epochs or config.epochs,
        )
        if args.runs is not None:
            runs = tuple(r for r in args.runs if r in ablations.default_runs(optimizer))
        for estimator in args.estimators:
            start = time.perf_counter()
            report = ablations.run_seeds(
                replace(config, estimator=estimator), runs, args.seeds, data=data, progress=False
            )
            seconds = time.perf_counter() - start
            (folder / f"{estimator}-{optimizer}.json").write_text(
                json.dumps(report, indent=1) + "\n"
            )
            claim = report.get("adjusted_vs_jitter")
            verdict = (
                ""
                if claim is None
                else (
                    f"adjusted − jitter agreement {claim['mean']:+.2f} points (bar {claim['bar']:+.1f})\n\n"
                )
            )
            sections.append(
                f"### {estimator}, {optimizer} ({seconds:.0f} s on this machine)\n\n{verdict}"
                f"{table(report)}\n"
            )
            print(f"{estimator}-{optimizer}: {seconds:.0f} s", file=sys.stderr)
            _write(
                argv, args, sections
            )  # after every pair of settings, so a cut run keeps what it made
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
