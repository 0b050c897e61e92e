"""Training a BNN in either mode: same model, data, batches and learning rate; only the algorithm differs.

The paper's recipe: Adam, lr 1e-3, batch 100, inputs scaled to [−1, 1], cross-entropy on the
last batch norm's output. Batches come from a generator seeded by ``BNNConfig.seed``.

Under ``torchrun`` each process trains its shard of every global batch with
DistributedDataParallel (``qatcore.distributed``): the replicas stay identical, while batch-norm
statistics (and the power-of-two gradient quantisation) are per process, as on separate devices.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qatcore import distributed
from qatcore.bnn.functions import GRADIENT_FORMATS
from qatcore.bnn.models import check_mode, set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.checks import check_choice, int_at_least
from qatcore.data import Dataset
from qatcore.metrics import accuracy
from qatcore.optimizers import PRESETS, OptimizerConfig
from qatcore.runtime import show_progress


@dataclass(frozen=True)
class BNNConfig:
    """One run: the training ``mode``, the paper's hyper-parameters, the ``optimizer`` (a
    ``qatcore.optimizers.OptimizerConfig``, or a preset name: ``"bnn_adam"``, the paper's, lr 1e-3
    and β₂ 0.999; ``"bnn_sgd"``; ``"bop"``) and the low-memory ``gradient`` format. The trainer keeps
    the rate constant, so the config's schedule must be ``"constant"``."""

    mode: str = "standard"
    epochs: int = 5
    batch_size: int = 100
    seed: int = 0
    optimizer: OptimizerConfig = PRESETS["bnn_adam"]
    gradient: str = "po2"

    def __post_init__(self) -> None:
        check_mode(self.mode)
        object.__setattr__(self, "optimizer", OptimizerConfig.of(self.optimizer))
        if self.optimizer.schedule != "constant":
            raise ValueError(
                "optimizer's schedule must be 'constant' (the BNN trainer keeps the rate), got "
                f"{self.optimizer.schedule!r}: use 'bnn_adam', 'bnn_sgd' or 'bop'"
            )
        check_choice("gradient", self.gradient, GRADIENT_FORMATS)
        int_at_least("epochs", self.epochs, 1)
        int_at_least("batch_size", self.batch_size, 2)
        int_at_least("seed", self.seed, 0)


@dataclass
class BNNResult:
    """Per-step losses, test accuracy after each epoch, final accuracies and mean step time, and the optimiser
    as training left it (its state, e.g. ``qatcore.bnn.shared_moment.listed(result.optimizer)``)."""

    mode: str
    losses: list[float] = field(default_factory=list)
    epoch_test_accuracy: list[float] = field(default_factory=list)
    train_accuracy: float = float("nan")
    test_accuracy: float = float("nan")
    seconds_per_step: float = float("nan")
    optimizer: Any = field(default=None, repr=False)


def signed_inputs(data: Dataset) -> Dataset:
    """``data`` with images mapped from [0, 1] to [−1, 1], the input range the paper trains on."""
    return dataclasses.replace(data, x_train=data.x_train * 2 - 1, x_test=data.x_test * 2 - 1)


def training_step(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One step: forward, cross-entropy, backward, optimiser step; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_alike(
    runs, data: Dataset, steps: int, batch_size: int = 100, seed: int = 0
) -> list[list[float]]:
    """Train each ``(model, optimizer)`` of ``runs`` for ``steps`` steps on the same batches of ``data``'s training
    set (as given: ``signed_inputs`` maps images to the paper's range), each batch ``batch_size`` examples drawn
    at random, with replacement, by a generator seeded with ``seed``; each run's losses. Runs that start from the
    same weights and differ only in how they keep their state must end alike."""
    steps, batch_size = int_at_least("steps", steps, 1), int_at_least("batch_size", batch_size, 1)
    runs = list(runs)
    if not runs:
        raise ValueError("runs must name at least one (model, optimizer) pair")
    generator = torch.Generator().manual_seed(int_at_least("seed", seed, 0))
    losses: list[list[float]] = [[] for _ in runs]
    for model, _ in runs:
        model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(data.x_train), (batch_size,), generator=generator)
        for (model, optimizer), run_losses in zip(runs, losses, strict=True):
            run_losses.append(
                training_step(model, optimizer, data.x_train[batch], data.y_train[batch])
            )
    return losses


def train_bnn(
    model: nn.Module, data: Dataset, config: BNNConfig = BNNConfig(), progress: bool | None = None
) -> BNNResult:
    """Switch ``model`` to ``config.mode`` and train it on ``data`` (images in [0, 1])."""
    # data-parallel replicas average float16 gradients: 1-bit ones cannot be averaged
    set_mode(model, config.mode, config.gradient, bit_gradients=not distributed.is_distributed())
    model.train()
    data = signed_inputs(data)
    optimizer = make_optimizer(model, config.mode, config.optimizer)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(data.x_train)
    local, local_batch = distributed.shard(torch.arange(n), config.batch_size)
    steps = -(-len(local) // local_batch) * config.epochs
    net = distributed.wrap(model)
    result = BNNResult(mode=config.mode, optimizer=optimizer)
    bar = tqdm(total=steps, desc=config.mode, disable=not show_progress(progress), leave=False)
    seconds = 0.0
    for _ in range(config.epochs):
        order, _ = distributed.shard(torch.randperm(n, generator=generator), config.batch_size)
        for start in range(0, len(order), local_batch):
            batch = order[start : start + local_batch]
            started = time.perf_counter()
            loss = training_step(net, optimizer, data.x_train[batch], data.y_train[batch])
            result.losses.append(distributed.mean(loss))
            seconds += time.perf_counter() - started
            bar.update(1)
        result.epoch_test_accuracy.append(accuracy(model, data.x_test, data.y_test))
    bar.close()
    result.train_accuracy = accuracy(model, data.x_train, data.y_train)
    result.test_accuracy = result.epoch_test_accuracy[-1]
    result.seconds_per_step = seconds / steps
    return result
