"""The first paper's table as its authors ran it: every run of theirs per optimizer, their metrics and ours.

DSQ on the MNIST CNN, batch 600, the settings of ``configs/paper_mnist_{sgd,adam}.toml`` (the
authors' round 1: 5 epochs of 100 steps, SGD lr 1e-3 with momentum 0.9, Adam lr 1e-4 with β₂ 0.95)
and the runs of ``qatcore.estimators.ablations.default_runs`` (SGD: main, jitter, no_warp,
scaledown, bits_1, bits_4; Adam: main, jitter, scaledown and our ``ablation_ours``), on
Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``; MNIST's are not packaged). The full
run, one seed, one thread, about 12 000 steps of about 0.5 s on a CPU (1.5–2 hours)::

    PYTHONPATH=$PWD QATCORE_THREADS=1 python bench/equivalence_paper.py --data-dir /usr/share/datasets/fashion-mnist

A cut is visible in the output: ``--steps-per-epoch N`` trains on the first ``N × 600`` images
(the authors' epoch is 100 steps), ``--epochs N`` sets both optimizers' epochs (scaledown 3N),
``--test-images N`` tests on the first N. ``--seeds``, ``--device cuda``, ``--estimators dsq pwl``
(``pwl`` is the course's tent-shaped estimator, not the authors' "pwl", which is their α-scaled STE).

``--stack-size N`` trains every run of all seeds that takes the same steps together, as stacked
networks of at most N runs (``qatcore.estimators.stacked``): with SGD and 3 seeds, 24 runs of 500
steps and 6 of 1500. On a GPU that is the way to the whole table in minutes (a step of this small
CNN is mostly kernel launches); the numbers equal the one-by-one runs' within float tolerance::

    PYTHONPATH=$PWD python bench/equivalence_paper.py --data-dir DIR --device cuda --seeds 3 --stack-size 32

The two optimizers can run side by side, one process each (``--optimizers sgd`` and ``--optimizers
adam`` with their own ``--out``), and ``--combine SGD.json ADAM.json`` then writes the one table
they make together (the same data and settings are checked; each part's command is kept).

Writes ``equivalence_paper.json`` (the command, the machine, what was cut, every report of
``ablations.run_seeds`` and the paper's claims, ``ablations.paper_claims``) and
``equivalence_paper.md`` to ``--out`` (default ``bench/results``), after every experiment, so an
interrupted run keeps what it made. Notebook 02 reads the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from qatcore import data as datasets
from qatcore import runtime
from qatcore.estimators import ablations

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
NAME = "equivalence_paper"


def machine(device: str) -> dict:
    """What ran it: CPU model, cores, torch threads, device, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device if gpu is None else f"{device} ({gpu})",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def describe_cut(
    args: argparse.Namespace, epochs: dict[str, int], data: datasets.Dataset, full_data: int
) -> str:
    """What this run leaves out of the authors' table, in words ('nothing' for the full run)."""
    cut = []
    if args.steps_per_epoch is not None:
        cut.append(
            f"{args.steps_per_epoch} steps per epoch, not {ablations.AUTHORS_STEPS_PER_EPOCH} "
            f"(the first {len(data.x_train)} of {full_data} training images)"
        )
    for optimizer, n in epochs.items():
        if n != args.config_epochs[optimizer]:
            cut.append(f"{optimizer}: {n} of {args.config_epochs[optimizer]} epochs")
    if args.test_images is not None:
        cut.append(f"the first {args.test_images} test images")
    if args.runs is not None:
        cut.append(f"only the runs {' '.join(args.runs)}")
    if args.optimizers != ["sgd", "adam"]:
        cut.append(f"only {' '.join(args.optimizers)}")
    if "dsq" not in args.estimators:
        cut.append("no DSQ run (the authors' custom estimator)")
    return "; ".join(cut) or "nothing"


ONLY = re.compile(r"^only ((?:sgd|adam)(?: (?:sgd|adam))*)$")


def combine(parts: list[dict]) -> dict:
    """One table from tables of the same data and settings whose experiments differ (parts that ran
    different optimizers, or a run stopped after its first optimizer): their experiments and times
    together, each part's command kept (its ``--out`` dropped: where it wrote), the cut recomputed
    and the claims checked on the whole."""
    keys = ("dataset", "batch_size", "train_images", "test_images", "steps_per_epoch")
    first, cuts, seen = parts[0], set(), []
    for part in parts:
        differing = [k for k in keys if part[k] != first[k]]
        if differing:
            raise SystemExit(f"--combine: the tables differ in {', '.join(differing)}")
        cuts.add(
            "; ".join(c for c in part["cut"].split("; ") if c != "nothing" and not ONLY.match(c))
        )
        seen += part["experiments"]
    if len(cuts) != 1 or len(set(seen)) != len(seen):
        raise SystemExit("--combine: the parts are cut differently or repeat an experiment")
    missing = [o for o in ("sgd", "adam") if not any(k.endswith(f"-{o}") for k in seen)]
    cut = [c for c in cuts.pop().split("; ") if c]
    if missing:
        cut.append(f"only {' '.join(o for o in ('sgd', 'adam') if o not in missing)}")
    table = {
        **first,
        "command": " & ".join(_part_command(part) for part in parts),
        "cut": "; ".join(cut) or "nothing",
        "complete": True,
        "seconds": {k: v for part in parts for k, v in part["seconds"].items()},
        "experiments": {k: v for part in parts for k, v in part["experiments"].items()},
    }
    table["full"] = table["cut"] == "nothing"
    table["claims"] = ablations.paper_claims(table)
    return table


def _part_command(part: dict) -> str:
    command = re.sub(r" --out \S+", "", part["command"])
    if part["complete"]:
        return command
    return f"{command} (stopped after {', '.join(part['experiments'])})"


def write(table: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / f"{NAME}.md").write_text(markdown(table))


def markdown(table: dict) -> str:
    """The JSON as a page: command, machine, cut, one table per experiment, the claims."""
    head = [
        f"# Paper 1: the authors' table ({table['dataset']}, DSQ, batch {table['batch_size']})",
        "",
        "Written by `bench/equivalence_paper.py`:",
        "",
        f"    {table['command']}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in table["machine"].items()) + ".",
        "",
        f"Cut from the authors' table: **{table['cut']}**"
        + ("" if table["complete"] else " (interrupted: the experiments below are all it made)")
        + ".",
        "",
        "Each column is a pair: the DSQ run against the named run (`qatcore.estimators.ablations`). "
        "Rows marked *theirs* follow the authors' definitions (mschoenb97/flax, "
        "examples/mnist/run_experiments.py), *ours* `qatcore.estimators.trajectory`. In the authors' "
        'code the STE run is called "pwl" (the STE scaled by α).',
        "",
    ]
    sections = []
    for key, report in table["experiments"].items():
        estimator, optimizer = key.split("-")
        seconds = table["seconds"].get(key)
        sections += [
            f"## {ablations.estimator_label(estimator)}, {optimizer} "
            f"({report['epochs']} epochs, seeds {report['seeds']}, {seconds:.0f} s)",
            "",
            ablations.format_table(report, table["steps_per_epoch"]),
            "",
        ]
    claims = ["## The paper's claims", ""] + [
        f"- {'holds' if holds else 'DOES NOT HOLD'}: {claim} ({numbers})"
        for claim, holds, numbers in table["claims"]
    ]
    return "\n".join(head + sections + claims) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder of Fashion-MNIST or MNIST IDX files")
    parser.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=("sgd", "adam"))
    parser.add_argument("--estimators", nargs="+", default=["dsq"])
    parser.add_argument("--runs", nargs="+", default=None, help="default: every run of the config")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--stack-size",
        type=int,
        default=None,
        metavar="N",
        help="train the runs (all seeds) that take the same steps as stacked networks of at most "
        "N runs (qatcore.estimators.stacked); default: one by one",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="cut: epochs (default: the config's)"
    )
    parser.add_argument(
        "--steps-per-epoch", type=int, default=None, help="cut: train on the first N × batch images"
    )
    parser.add_argument(
        "--test-images", type=int, default=None, help="cut: the first N test images"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the JSON and markdown")
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="write the one table of parts that ran different optimizers, and train nothing",
    )
    args = parser.parse_args(argv)
    if args.combine:
        write(combine([json.loads(p.read_text()) for p in args.combine]), args.out)
        return 0
    if args.data_dir is None:
        parser.error("--data-dir is required (unless --combine)")
    runtime.configure(seed=0)
    configs = {
        opt: ablations.load_config(
            ROOT / f"configs/paper_mnist_{opt}.toml",
            dataset=args.dataset,
            data_dir=args.data_dir,
            device=args.device,
        )
        for opt in args.optimizers
    }
    args.config_epochs = {opt: configs[opt][0].epochs for opt in args.optimizers}
    epochs = {opt: args.epochs or args.config_epochs[opt] for opt in args.optimizers}
    batch = {configs[opt][0].batch_size for opt in args.optimizers}
    if len(batch) != 1:
        raise SystemExit(f"the configs' batch sizes differ: {batch}")
    batch_size = batch.pop()
    loaded = datasets.load(args.dataset, args.data_dir)
    train = None if args.steps_per_epoch is None else args.steps_per_epoch * batch_size
    data = datasets.subset(loaded, train, args.test_images)
    env = " ".join(f"{k}={os.environ[k]}" for k in ("QATCORE_THREADS",) if k in os.environ)
    table = {
        "command": f"PYTHONPATH=$PWD {env} python bench/equivalence_paper.py {shlex.join(argv)}".replace(
            "  ", " "
        ),
        "machine": machine(args.device),
        "dataset": args.dataset,
        "batch_size": batch_size,
        "train_images": len(data.x_train),
        "test_images": len(data.x_test),
        "steps_per_epoch": -(-len(data.x_train) // batch_size),
        "cut": describe_cut(args, epochs, data, len(loaded.x_train)),
        "complete": False,
        "seconds": {},
        "experiments": {},
        "claims": [],
    }
    table["full"] = table["cut"] == "nothing"
    for optimizer in args.optimizers:
        config, runs, _ = configs[optimizer]
        config = replace(config, epochs=epochs[optimizer])
        if args.runs is not None:
            runs = tuple(r for r in args.runs if r in ablations.default_runs(optimizer))
        for estimator in args.estimators:
            start = time.perf_counter()
            key = f"{estimator}-{optimizer}"
            print(f"{key}: runs {', '.join(runs)}, seeds {args.seeds}", file=sys.stderr)
            report = ablations.run_seeds(  # a bar per run, unless $QATCORE_PROGRESS is 0
                replace(config, estimator=estimator),
                runs,
                args.seeds,
                data=data,
                stack_size=args.stack_size,
            )
            table["seconds"][key] = round(time.perf_counter() - start, 1)
            table["experiments"][key] = report
            table["claims"] = ablations.paper_claims(table)
            table["complete"] = key == f"{args.estimators[-1]}-{args.optimizers[-1]}"
            write(table, args.out)
            print(f"{key}: {table['seconds'][key]:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
