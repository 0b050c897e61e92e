"""Several runs of one network trained as one: a step for all of them at once.

The first paper's table trains many runs of the same small CNN (DSQ, its STE twins, the jitter
run, other bit widths, other seeds) on batches of the same size for the same number of steps.
Trained one after another, a step of such a small network on a GPU is mostly kernel launches.
Stacked, each layer runs once for every run: the ``K`` runs' convolution kernels become one
grouped convolution (``groups = K``, each run's channels a group) and their dense layers one
batched matrix product, so ``K`` runs cost about the launches of one.

Nothing else changes. Each run keeps its own model (its parameters, its estimator, bit width
and range), its own optimizer (``train.build_optimizer``, with its rate and ``α`` factor), its own
batches (drawn from its own seed, as ``train.train`` draws them) and its own loss; the runs'
losses are summed before the backward, and no parameter of one run reaches another run's loss,
so each run receives exactly its own gradient. What differs from training the runs one by one is
the order of the float sums inside a grouped convolution and a batched product: the records agree
within float tolerance, not bit for bit (``tests/test_stacked.py`` states the tolerance).

The per-step records (every run's quantized weights after every step, each epoch's test logits,
the losses) stay on the runs' device until training ends, so a step never waits for a copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qatcore import distributed
from qatcore.data import Dataset
from qatcore.estimators.layers import QuantizedWeight, quantized_layers
from qatcore.estimators.train import TrainConfig, build_optimizer
from qatcore.runtime import show_progress

#: the layers a stacked network is built from (``nn.Sequential`` models of these only)
_ELEMENTWISE = (nn.ReLU, nn.AvgPool2d, nn.MaxPool2d)


@dataclass
class StackedRecord:
    """What one stacked run leaves, on the CPU: its per-step losses, its quantized layers' latent
    weights after every step (T+1 × N, step 0 the initialisation) and its test logits after each
    tested epoch."""

    losses: list[float]
    weights: torch.Tensor
    epoch_logits: list[torch.Tensor]


def check_stackable(models: Sequence[nn.Module]) -> None:
    """ValueError unless ``models`` are ``nn.Sequential`` networks of the same layers (convolutions,
    dense layers, ReLU, pooling, flatten) with the same shapes, all on one device in one dtype."""
    if not models:
        raise ValueError("stacking needs at least one model")
    first = models[0]
    if not isinstance(first, nn.Sequential):
        raise ValueError(f"only nn.Sequential models stack, got {type(first).__name__}")
    for layer in first:
        if not isinstance(layer, (nn.Conv2d, nn.Linear, nn.Flatten, *_ELEMENTWISE)):
            raise ValueError(f"layer {type(layer).__name__} does not stack")
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
            raise ValueError("only ungrouped convolutions with zero padding stack")
    shapes = [[tuple(p.shape) for p in first.parameters()]]
    devices = {(p.device, p.dtype) for model in models for p in model.parameters()}
    for model in models[1:]:
        if not isinstance(model, nn.Sequential) or [type(a) for a in model] != [
            type(b) for b in first
        ]:
            raise ValueError("stacked models must have the same layers, in the same order")
        shapes.append([tuple(p.shape) for p in model.parameters()])
    if any(s != shapes[0] for s in shapes):
        raise ValueError("stacked models must have parameters of the same shapes")
    if len(devices) != 1:
        found = sorted(f"{device} {dtype}" for device, dtype in devices)
        raise ValueError(f"stacked models must lie on one device in one dtype, got {found}")


def _kernels(layers: list[nn.Conv2d] | list[nn.Linear]) -> list[torch.Tensor]:
    """The weights the layers compute with: ``Q(w)`` with each layer's estimator's backward where
    quantized. Layers of the same estimator, bit width and range are quantized in one call on their
    weights side by side (``Q`` and ``Q̂′`` act value by value): a few calls for all the runs, not one
    per run, which on a GPU is a few kernel launches rather than K times as many."""
    groups: dict[tuple, list[int]] = {}
    for i, layer in enumerate(layers):
        key = (
            (
                id(layer.estimator.definition),
                tuple(layer.estimator.params.items()),
                layer.bits,
                layer.m,
            )
            if isinstance(layer, QuantizedWeight)
            else ("float", i)
        )
        groups.setdefault(key, []).append(i)
    kernels: list[torch.Tensor] = [layer.weight for layer in layers]
    for members in groups.values():
        first = layers[members[0]]
        if not isinstance(first, QuantizedWeight):
            continue
        bound = first.estimator.bind(first.bits, first.m)
        flat = bound.quantize(torch.cat([layers[i].weight.reshape(-1) for i in members]))
        parts = flat.split([layers[i].weight.numel() for i in members])
        for i, part in zip(members, parts, strict=True):
            kernels[i] = part.view_as(layers[i].weight)
    return kernels


def _biases(layers: list[nn.Conv2d] | list[nn.Linear]) -> list[torch.Tensor] | None:
    """The layers' biases, or ``None`` where they have none."""
    biases = [layer.bias for layer in layers]
    return None if any(b is None for b in biases) else [b for b in biases if b is not None]


def _conv(layers: list[nn.Conv2d], x: torch.Tensor) -> torch.Tensor:
    """``K`` convolutions as one grouped convolution of ``x`` (batch, K·C_in, H, W)."""
    first = layers[0]
    weight = torch.cat(_kernels(layers))
    biases = _biases(layers)
    bias = None if biases is None else torch.cat(biases)
    return F.conv2d(
        x, weight, bias, first.stride, first.padding, first.dilation, groups=len(layers)
    )


def _dense(layers: list[nn.Linear], x: torch.Tensor) -> torch.Tensor:
    """``K`` dense layers as one batched product of ``x`` (K, batch, in)."""
    weight = torch.stack(_kernels(layers))  # K × out × in
    out = torch.bmm(x, weight.transpose(1, 2))
    biases = _biases(layers)
    if biases is not None:
        out = out + torch.stack(biases).unsqueeze(1)
    return out


def stacked_forward(models: Sequence[nn.Sequential], x: torch.Tensor) -> torch.Tensor:
    """The ``K`` models' outputs on their own inputs: ``x`` is (K, batch, C, H, W) or (K, batch,
    features); the result is (K, batch, outputs), row ``k`` model ``k``'s output on ``x[k]``.

    Image tensors travel as (batch, K·C, H, W), so that convolutions, ReLU and pooling treat each
    run's channels as their own group; dense layers take (K, batch, features)."""
    k, batch = x.shape[0], x.shape[1]
    h = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:]) if x.dim() == 5 else x
    for layers in zip(*models, strict=True):
        first = layers[0]
        if isinstance(first, nn.Conv2d):
            h = _conv(list(layers), h)
        elif isinstance(first, nn.Flatten):
            h = h.reshape(batch, k, -1).transpose(0, 1)
        elif isinstance(first, nn.Linear):
            h = _dense(list(layers), h)
        else:
            h = first(h)
    return h


class _Recorder:
    """Every run's quantized weights after every step, into one tensor on the runs' device."""

    def __init__(self, models: Sequence[nn.Module], steps: int) -> None:
        self.layers = [list(quantized_layers(model).values()) for model in models]
        size = sum(layer.weight.numel() for layer in self.layers[0])
        weight = self.layers[0][0].weight
        self.rows = weight.new_empty(steps + 1, len(models), size)
        self.write(0)

    @torch.no_grad()
    def write(self, step: int) -> None:
        for k, layers in enumerate(self.layers):
            torch.cat([layer.weight.reshape(-1) for layer in layers], out=self.rows[step, k])


@torch.no_grad()
def _test_logits(models: Sequence[nn.Sequential], data: Dataset) -> torch.Tensor:
    """Every model's logits on the test images (K × test images × classes), on the device."""
    first = next(models[0].parameters())
    for model in models:
        model.eval()
    chunks = [
        stacked_forward(models, x.to(first.device, first.dtype).expand(len(models), *x.shape))
        for x in data.x_test.split(1000)
    ]
    for model in models:
        model.train()
    return torch.cat(chunks, dim=1)


def _common_steps(
    models: Sequence[nn.Sequential], configs: Sequence[TrainConfig]
) -> tuple[int, int]:
    """The batch size and epochs every run shares; ValueError where they cannot be stacked."""
    check_stackable(models)
    if len(configs) != len(models):
        raise ValueError(f"{len(models)} models need {len(models)} configs, got {len(configs)}")
    plans = {(c.batch_size, c.epochs) for c in configs}
    if len(plans) != 1:
        raise ValueError(
            f"stacked runs must share batch size and epochs, got {sorted(plans)} "
            "(batch size, epochs): stack each group on its own"
        )
    if distributed.is_distributed():
        raise ValueError("stacked runs train in one process: leave the process group first")
    return plans.pop()


def _step(
    models: Sequence[nn.Sequential],
    optimizers: Sequence[torch.optim.Optimizer],
    rates: Sequence[float],
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """One step of every run at its rate (times each group's factor, as ``train.train_step``
    sets it); returns the runs' losses (K, on the device)."""
    for optimizer, lr in zip(optimizers, rates, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = lr * group["factor"]
        optimizer.zero_grad(set_to_none=True)
    out = stacked_forward(models, x)
    # each run's mean loss, as F.cross_entropy gives it for that run alone
    per_image = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
    losses = per_image.view(len(models), -1).mean(dim=1)
    losses.sum().backward()
    for optimizer in optimizers:
        optimizer.step()
    return losses.detach()


def train_stacked(
    models: Sequence[nn.Sequential],
    data: Dataset,
    configs: Sequence[TrainConfig],
    progress: bool | None = None,
    test_curves: bool = True,
) -> list[StackedRecord]:
    """Train ``models[k]`` with ``configs[k]`` for every ``k``, all in one stacked step.

    Each run draws its batches as ``train.train`` does from its config's seed and steps its own
    optimizer (``train.build_optimizer``) at its own rate, so run ``k`` follows the run that
    ``train.train(models[k], data, configs[k])`` trains, within float tolerance. The configs must
    share the batch size and the number of epochs (so every run takes the same steps). After every
    epoch (or, with ``test_curves=False``, after the last only) each run's test logits are kept.
    """
    batch_size, epochs = _common_steps(models, configs)
    n = len(data.x_train)
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * epochs
    first = next(models[0].parameters())
    optimizers = [build_optimizer(m, c) for m, c in zip(models, configs, strict=True)]
    generators = {c.seed: torch.Generator().manual_seed(c.seed) for c in configs}
    recorder = _Recorder(models, total)
    losses = first.new_empty(total, len(models))
    logits: list[torch.Tensor] = []
    for model in models:
        model.train()
    desc = f"{len(models)} runs stacked"
    bar = tqdm(total=total, desc=desc, disable=not show_progress(progress), leave=False)
    step = 0
    for _ in range(epochs):
        orders = {seed: torch.randperm(n, generator=g) for seed, g in generators.items()}
        for start in range(0, n, batch_size):
            batches = [orders[c.seed][start : start + batch_size] for c in configs]
            x = torch.stack([data.x_train[b] for b in batches]).to(first.device, first.dtype)
            y = torch.stack([data.y_train[b] for b in batches]).to(first.device)
            rates = [c.optimizer.rate(step, total) for c in configs]
            losses[step] = _step(models, optimizers, rates, x, y)
            step += 1
            recorder.write(step)
            if step % per_epoch == 0 and (test_curves or step == total):
                logits.append(_test_logits(models, data))
            bar.update(1)
    bar.close()
    weights, losses_cpu = recorder.rows.cpu(), losses.cpu()
    tested = [chunk.cpu() for chunk in logits]
    return [
        StackedRecord(
            losses_cpu[:, k].tolist(), weights[:, k].clone(), [chunk[k] for chunk in tested]
        )
        for k in range(len(models))
    ]
