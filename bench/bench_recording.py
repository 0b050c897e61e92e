"""Step throughput of the first paper's recorded runs against a plain float PyTorch step.

The MNIST CNN (28×28, 2 bits) at batch 600, five variants side by side in one process:

* ``float``: the same network with plain ``nn.Conv2d`` kernels, a plain PyTorch loop (shuffled
  batches indexed from the training tensors, cross-entropy, backward, SGD with momentum 0.9);
* ``STE``, ``DSQ``: the quantized network in that same plain loop, nothing recorded;
* ``STE rec``, ``DSQ rec``: the quantized network trained as every run of an equivalence
  experiment is (``qatcore.estimators.equivalence``: ``train`` with the paper's schedule and
  parameter groups, the latent quantized weights kept after every step, the test set's loss and
  accuracy after every epoch, and the final accuracies).

The data are random images of MNIST's shape, kept in the authors' proportions at a smaller scale:
each epoch is ``--steps-per-epoch`` steps of 600 images, the test set 100 images per step of an
epoch (their 10 000 per 100-step epoch), and a recorded run is ``--epochs`` epochs (their SGD runs: 5),
so the once-per-epoch and once-per-run work weigh per step as they do in the paper's runs. One
timed block of a variant is one such run. After a warm-up block each, every round times one block of
every variant, round-robin, the order rotating each round, so load from other processes hits all alike.
Reported: the median seconds per step over the rounds (min–max) and the median of the per-round
ratios to ``float``.

Target (issue 32): a step with recording at most 1.2× the plain float step; the script exits 1
otherwise. Run from the repository root, one thread as the paper's CPU runs use:

    QATCORE_THREADS=1 .venv/bin/python bench/bench_recording.py            # 5–10 minutes
    QATCORE_THREADS=1 .venv/bin/python bench/bench_recording.py --quick    # smoke run, prints only
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
import torch.nn.functional as F
from bench_training import LR, MOMENTUM, float_twin, machine_facts
from tables import publish
from torch import nn

from qatcore import runtime
from qatcore.data import Dataset
from qatcore.estimators.equivalence import _train_recorded, digits_optimizer
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.train import TrainConfig

BITS, BATCH, IMAGE = 2, 600, 28
TEST_PER_STEP = 100  # the authors' 10 000 test images per 100-step epoch
LIMIT = 1.2  # a recorded step may cost at most this many plain float steps
VARIANTS = ("float", "STE", "DSQ", "STE rec", "DSQ rec")
RESULTS = Path(__file__).resolve().parent / "results" / "recording.md"


def synthetic_mnist(steps_per_epoch: int, seed: int = 0) -> Dataset:
    """Random 28×28 images and labels: ``steps_per_epoch`` batches of training images and
    ``TEST_PER_STEP`` test images per step (speed does not depend on the pixels)."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, 1, IMAGE, IMAGE, generator=generator)
        return x, torch.randint(0, 10, (n,), generator=generator)

    x_train, y_train = split(steps_per_epoch * BATCH)
    x_test, y_test = split(steps_per_epoch * TEST_PER_STEP)
    return Dataset("synthetic MNIST", x_train, y_train, x_test, y_test, 10)


def plain_block(model: nn.Module, data: Dataset, epochs: int) -> tuple[float, int]:
    """A plain PyTorch loop over ``epochs`` epochs of shuffled batches: (seconds, steps)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    model.train()
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in torch.randperm(len(data.x_train)).split(BATCH):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
            optimizer.step()
            steps += 1
    return time.perf_counter() - start, steps


def recorded_block(model: nn.Module, data: Dataset, epochs: int) -> tuple[float, int]:
    """One run as an equivalence experiment trains it, with all its recording: (seconds, steps)."""
    config = TrainConfig(digits_optimizer("sgd", LR), batch_size=BATCH, epochs=epochs)
    start = time.perf_counter()
    record = _train_recorded(model, data, config, progress=False)
    return time.perf_counter() - start, len(record.losses)


def build() -> dict[str, tuple]:
    """Each variant's model and block function, all from the same initial weights."""
    ste = MNISTCNN(bits=BITS, estimator="ste", image_size=IMAGE)
    models = {"STE": ste, "float": float_twin(ste)}
    for name, estimator in (("DSQ", "dsq"), ("STE rec", "ste"), ("DSQ rec", "dsq")):
        models[name] = MNISTCNN(bits=BITS, estimator=estimator, image_size=IMAGE)
        models[name].load_state_dict(ste.state_dict())
    return {
        name: (models[name], recorded_block if name.endswith("rec") else plain_block)
        for name in VARIANTS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed rounds (default 11)")
    parser.add_argument("--steps-per-epoch", type=int, default=2, help="default 2")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per block (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2×2 steps, print only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps_per_epoch, args.epochs = 1, 2, 2
    runtime.configure(seed=0)
    load = [round(x, 2) for x in os.getloadavg()]
    data = synthetic_mnist(args.steps_per_epoch)
    variants = build()
    for model, block in variants.values():
        block(model, data, 1)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(args.repeats):
        shift = round_ % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            gc.collect()
            model, block = variants[name]
            seconds, steps = block(model, data, args.epochs)
            times[name].append(seconds / steps)
            print(
                f"round {round_ + 1} {name}: {1e3 * seconds / steps:.1f} ms/step", file=sys.stderr
            )

    def ratio(name: str) -> float:
        return statistics.median(a / b for a, b in zip(times[name], times["float"], strict=True))

    passed = all(ratio(name) <= LIMIT for name in VARIANTS)
    rows = [
        f"| {name} | {1e3 * statistics.median(t):.1f} ({1e3 * min(t):.1f}–{1e3 * max(t):.1f}) "
        f"| {ratio(name):.3f} |"
        for name, t in times.items()
    ]
    steps = args.steps_per_epoch * args.epochs
    lines = [
        "# Step throughput with recording: MNIST CNN, batch 600",
        "",
        "Written by `bench/bench_recording.py`" + (" (`--quick`)" if args.quick else "") + ".",
        "",
        *machine_facts(),
        f"- load average before the run: {load} (1, 5, 15 minutes)",
        "",
        f"One block = {args.epochs} epochs of {args.steps_per_epoch} steps ({steps} steps) on random "
        f"28×28 images, {args.steps_per_epoch * TEST_PER_STEP} test images (the authors' 100 per "
        f"step of an epoch); {args.repeats} rounds, one block of every variant each, round-robin. "
        "`rec`: trained as an equivalence run is, recording every step's weights, each epoch's "
        "test loss and accuracy, and the final accuracies.",
        "",
        "| variant | ms/step, median (min–max) | × float (median of per-round ratios) |",
        "|---|---:|---:|",
        *rows,
        "",
        f"Target: every variant, recording included, at most {LIMIT}× the plain float step: "
        f"**{'PASS' if passed else 'FAIL'}**",
    ]
    publish(lines, args.output, args.quick)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
