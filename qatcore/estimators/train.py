"""A deterministic training loop that records weight trajectories.

The first paper's recipe: SGD with momentum 0.9 or Adam with β₂ = 0.95, a linear warm-up over
2 % of the steps and then cosine decay to 0 (``qatcore.optimizers.OptimizerConfig``), cross-entropy loss. Batches are drawn from a
generator seeded by ``TrainConfig.seed``, so two runs with the same seed, thread count and
initial weights give bit-identical weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qatcore import distributed
from qatcore.checks import int_at_least, positive_number
from qatcore.data import Dataset
from qatcore.estimators.layers import quantized_layers
from qatcore.metrics import accuracy
from qatcore.optimizers import OptimizerConfig
from qatcore.runtime import show_progress


@dataclass(frozen=True)
class TrainConfig:
    """One run: the optimizer with its schedule, batches, epochs, seed.

    ``quantized_lr_factor`` multiplies the learning rate of the quantized weights only: the α of
    the STE-equivalence theorem.
    """

    optimizer: OptimizerConfig = OptimizerConfig()
    batch_size: int = 600
    epochs: int = 10
    seed: int = 0
    quantized_lr_factor: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, OptimizerConfig):
            raise TypeError(
                f"optimizer must be an OptimizerConfig, e.g. OptimizerConfig('adam', lr=1e-3), "
                f"got {self.optimizer!r}"
            )
        positive_number("quantized_lr_factor", self.quantized_lr_factor)
        for name in ("batch_size", "epochs"):
            int_at_least(name, getattr(self, name), 1)
        int_at_least("seed", self.seed, 0)


@dataclass
class TrainResult:
    """Per-step losses and learning rates, latent weights of the quantized layers at the recorded
    steps (step 0 is the initialisation), and final accuracies."""

    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    train_accuracy: float = float("nan")
    test_accuracy: float = float("nan")

    @property
    def steps(self) -> int:
        return len(self.losses)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``config.optimizer`` with two groups: the quantized weights (rate × ``quantized_lr_factor``) and the rest."""
    quantized = {id(layer.weight) for layer in quantized_layers(model).values()}
    groups = [
        {
            "params": [p for p in model.parameters() if id(p) in quantized],
            "factor": config.quantized_lr_factor,
        },
        {"params": [p for p in model.parameters() if id(p) not in quantized], "factor": 1.0},
    ]
    return config.optimizer.build([g for g in groups if g["params"]])


def train_step(
    net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lr: float
) -> float:
    """One SGD/Adam step on batch ``(x, y)`` at rate ``lr`` (times each group's ``factor``);
    returns the cross-entropy loss averaged over the processes."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["factor"]
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()
    return distributed.mean(loss.item())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the quantized layers' latent weights, by layer name (on the CPU)."""
    return {
        name: layer.weight.detach().cpu().clone() for name, layer in quantized_layers(model).items()
    }


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig = TrainConfig(),
    record_steps: Iterable[int] = (),
    progress: bool | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
    evaluate: bool = True,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``config``; record latent weights at ``record_steps``.

    ``on_step(step, model)`` is called after every optimizer step (``step`` counts from 1), for
    callers that record more than weight snapshots. ``evaluate=False`` skips the final train and
    test accuracies (left NaN), for callers that evaluate the model themselves.

    ``progress``: a tqdm bar (a widget in JupyterLab, text in a terminal); ``None`` shows it
    unless ``$QATCORE_PROGRESS`` is ``0`` or the call runs under pytest.

    Inside a ``torch.distributed`` process group, each process trains its shard of every global
    batch under DistributedDataParallel (``qatcore.distributed``); losses are the global average.
    """
    n = len(data.x_train)
    local, local_batch = distributed.shard(torch.arange(n), config.batch_size)
    per_epoch = math.ceil(len(local) / local_batch)
    total = per_epoch * config.epochs
    record = sorted(set(record_steps))
    if record and (record[0] < 0 or record[-1] > total):
        raise ValueError(f"record_steps must lie in [0, {total}] (the run has {total} steps)")
    optimizer = build_optimizer(model, config)
    device = next(model.parameters()).device  # data stay on the CPU; each batch moves to the model
    generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult()
    if 0 in record:
        result.snapshots[0] = snapshot(model)
    model.train()
    net = distributed.wrap(model)
    bar = tqdm(
        total=total,
        desc=f"{config.optimizer.label} lr={config.optimizer.lr:g}",
        disable=not show_progress(progress),
        leave=False,
    )
    step = 0
    for _ in range(config.epochs):
        order, _ = distributed.shard(torch.randperm(n, generator=generator), config.batch_size)
        for start in range(0, len(order), local_batch):
            batch = order[start : start + local_batch]
            lr = config.optimizer.rate(step, total)
            x, y = data.x_train[batch].to(device), data.y_train[batch].to(device)
            step += 1
            result.losses.append(train_step(net, optimizer, x, y, lr))
            result.learning_rates.append(lr)
            if step in record:
                result.snapshots[step] = snapshot(model)
            if on_step is not None:
                on_step(step, model)
            bar.update(1)
            bar.set_postfix(loss=f"{result.losses[-1]:.3f}", refresh=False)
    bar.close()
    if evaluate:
        result.train_accuracy = accuracy(model, data.x_train, data.y_train)
        result.test_accuracy = accuracy(model, data.x_test, data.y_test)
    return result
