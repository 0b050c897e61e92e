"""The first paper's ImageNet experiment: a quantized ResNet, custom estimator vs adjusted STE.

The same four runs as ``qatcore.estimators.equivalence`` (``custom``, ``adjusted``, ``ablation``,
``jitter``), on a ResNet-18 or ResNet-50 whose every convolution kernel is quantized (the
classifier, batch norm and activations stay float: our reading of the authors' setup), trained
under ``torchrun`` with DistributedDataParallel on an ImageNet-layout folder
(``qatcore.data.image_folder``). Written for a multi-GPU machine and tested here only on the CPU with a
tiny synthetic folder.

Two things change with the scale:

* **Trajectories are sampled.** Recording 25 M latent weights at every step does not fit, so a
  fixed random subset of ``recorded_weights`` coordinates (the same in every run) is recorded every
  ``record_every`` steps. Agreement, alignment error and change points are measured on that
  sample; change points between two records are not seen.
* **Runs are resumable.** Each run saves a checkpoint into ``out/runs/`` after every epoch, and a
  run that was stopped (``stop_after_epochs``, a job's time limit, a crash) continues from its last
  epoch when the same command is given again.

The settings live in a TOML file (``configs/imagenet_*.toml``, the optimizer in its ``[optimizer]``
table); ``load_config`` reads it.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from qatcore import distributed, estimators, runtime
from qatcore.architectures import ResNet18, ResNet50
from qatcore.checks import (
    check_choice,
    check_device,
    int_at_least,
    optional_text,
    positive_number,
)
from qatcore.data.image_folder import ImageFolder
from qatcore.estimators.equivalence import (
    RUNS,
    EquivalenceResult,
    Experiment,
    RunPlan,
    RunRecord,
    compare,
    needs_alpha,
    plan_runs,
    read_settings,
)
from qatcore.estimators.layers import quantize_convolutions, quantized_layers
from qatcore.estimators.train import build_optimizer, train_step
from qatcore.files import atomic_write, output_folder, torch_save
from qatcore.optimizers import OptimizerConfig

ARCHITECTURES = {"resnet18": ResNet18, "resnet50": ResNet50}


@dataclass(frozen=True, kw_only=True)
class ImageNetConfig(Experiment):
    """One ImageNet experiment: the shared settings (``batch_size`` is the global batch, split over the
    processes), the network, the data, what is recorded and where."""

    data_dir: str
    out: str = "runs/imagenet"
    architecture: str = "resnet50"
    width_multiplier: float = 1.0
    image_size: int = 224
    resize: int | None = (
        None  # evaluation: shorter side before the centre crop (default 8/7 · image_size)
    )
    bits: int = 4
    optimizer: OptimizerConfig = OptimizerConfig("sgd", lr=0.1)
    batch_size: int = 256
    epochs: int = 16
    runs: tuple[str, ...] = RUNS
    recorded_weights: int = 65536
    record_every: int = 50
    eval_examples: int = 10000
    eval_batch_size: int = 250
    workers: int = 8
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("architecture", self.architecture, sorted(ARCHITECTURES))
        object.__setattr__(self, "runs", tuple(self.runs))
        positive_number("width_multiplier", self.width_multiplier)
        for name in (
            "image_size",
            "recorded_weights",
            "record_every",
            "eval_examples",
            "eval_batch_size",
        ):
            int_at_least(name, getattr(self, name), 1)
        int_at_least("workers", self.workers, 0)
        if optional_text("data_dir", self.data_dir) is None:
            raise TypeError("data_dir must be a non-empty string (a folder path), got None")
        optional_text("out", self.out)
        check_device("device", self.device, allow_auto=True)


def load_config(path: str | os.PathLike, **overrides) -> ImageNetConfig:
    """The ``ImageNetConfig`` of a TOML file (``equivalence.read_settings``), with ``overrides``
    (those not ``None``) taking precedence."""
    values = read_settings(path, ImageNetConfig, **overrides)
    if "data_dir" not in values:
        raise ValueError(f"{path}: data_dir is not set (give it in the file or with --data-dir)")
    return ImageNetConfig(**values)


def build_model(config: ImageNetConfig, estimator: str, classes: int) -> nn.Module:
    """The float ResNet of ``config`` with every convolution quantized to ``bits`` bits."""
    net = ARCHITECTURES[config.architecture](config.width_multiplier, config.image_size, 3, classes)
    return quantize_convolutions(net, config.bits, estimator)


class WeightSample:
    """A fixed random subset of the quantized weights (sorted, so each layer's columns are adjacent)."""

    def __init__(self, model: nn.Module, size: int, seed: int) -> None:
        layers = quantized_layers(model)
        sizes = [layer.weight.numel() for layer in layers.values()]
        total = sum(sizes)
        chosen = (
            torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: min(size, total)]
            .sort()
            .values
        )
        starts = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        self.indices, self.slices, ms = {}, {}, []
        column = 0
        for i, (name, layer) in enumerate(layers.items()):
            mine = chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i]
            self.indices[name] = mine
            self.slices[name] = slice(column, column + len(mine))
            ms.append(torch.full((len(mine),), layer.m, dtype=torch.float64))
            column += len(mine)
        self.m = torch.cat(ms)

    def take(self, model: nn.Module) -> torch.Tensor:
        """The sampled latent weights of ``model`` (float32, on the CPU)."""
        layers = quantized_layers(model)
        return torch.cat(
            [
                layers[name].weight.detach().reshape(-1)[idx.to(layers[name].weight.device)].cpu()
                for name, idx in self.indices.items()
            ]
        )


def evaluation_share(indices: list[int], rank: int, world: int) -> list[int]:
    """Process ``rank``'s images: positions ``rank, rank + W, …`` of ``indices``, padded with a repeat
    to ``ceil(n / W)`` so every process computes as many logits (``gather_shards`` drops the extras)."""
    share = math.ceil(len(indices) / world)
    mine = indices[rank::world] or indices[:1]  # fewer images than processes: a spare
    return mine + mine[-1:] * (share - len(mine))


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: ImageFolder, indices: torch.Tensor, batch_size: int, workers: int
) -> torch.Tensor:
    """Logits of ``dataset[indices]``, computed by all processes (each takes every W-th image)."""
    mine = evaluation_share(indices.tolist(), *distributed.place())
    device = next(model.parameters()).device
    distributed.broadcast_buffers(model)
    model.eval()
    loader = DataLoader(
        torch.utils.data.Subset(dataset, mine), batch_size=batch_size, num_workers=workers
    )
    logits = torch.cat([model(x.to(device)) for x, _ in loader])
    model.train()
    return distributed.gather_shards(logits, len(indices)).cpu()


def _checkpoint_path(config: ImageNetConfig, name: str) -> Path:
    return Path(config.out) / "runs" / f"{name}.pt"


def _fingerprint(config: ImageNetConfig) -> str:
    """What a checkpoint must share with the run that resumes it (not the paths or the loader)."""
    kept = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("data_dir", "out", "workers", "device", "runs")
    }
    return json.dumps(kept, sort_keys=True)


def _save(config: ImageNetConfig, name: str, state: dict) -> None:
    if distributed.is_main_process():
        atomic_write(
            _checkpoint_path(config, name), lambda path: torch_save(state, path), overwrite=True
        )
    if distributed.is_distributed():
        torch.distributed.barrier()


def _resume(config: ImageNetConfig, name: str) -> dict | None:
    path = _checkpoint_path(config, name)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated file, a foreign pickle
        problem = next((line for line in str(error).splitlines() if line.strip()), "")
        raise ValueError(
            f"{str(path)!r} is not a readable run checkpoint ({type(error).__name__}: {problem[:200]}); "
            "remove it to start that run again"
        ) from None
    needed = ("fingerprint", "finished", "losses", "weights") + (
        ("logits", "accuracy")
        if isinstance(state, dict) and state.get("finished")
        else ("epoch", "model", "optimizer")
    )
    if not isinstance(state, dict) or any(key not in state for key in needed):
        raise ValueError(
            f"{str(path)!r} is not a qatcore ImageNet run checkpoint (it lacks "
            f"{[k for k in needed if not isinstance(state, dict) or k not in state]}); "
            "remove it to start that run again"
        )
    if state["fingerprint"] != _fingerprint(config):
        raise ValueError(
            f"{str(path)!r} is a run of other settings; give another out folder or remove it"
        )
    return state


def train_run(
    config: ImageNetConfig,
    name: str,
    model: nn.Module,
    run: RunPlan,
    train_set: ImageFolder,
    sample: WeightSample,
    eval_set: ImageFolder,
    eval_indices: torch.Tensor,
    progress: bool | None = None,
    stop_after_epochs: int | None = None,
) -> RunRecord | None:
    """Train one run, resuming from its checkpoint; ``None`` when stopped after ``stop_after_epochs``
    epochs of this call."""
    state = _resume(config, name)
    if state is not None and state["finished"]:
        return RunRecord(state["losses"], state["weights"], state["logits"], state["accuracy"])
    device = next(model.parameters()).device
    train_config = config.train_config(run)
    optimizer = build_optimizer(model, train_config)
    rank, world = distributed.place()
    local_batch = distributed.local_batch_size(config.batch_size)
    sampler: DistributedSampler[int] = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
    )
    loader_options: dict[str, Any] = dict(
        batch_size=local_batch,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    per_epoch = len(sampler) // local_batch
    if per_epoch == 0:
        raise ValueError(
            f"{len(train_set)} training images make no global batch of {config.batch_size}"
        )
    total = per_epoch * config.epochs
    losses, rows, first_epoch = [], [sample.take(model)], 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        losses, rows, first_epoch = list(state["losses"]), list(state["weights"]), state["epoch"]
    net = distributed.wrap(model)
    show = runtime.show_progress(progress) and distributed.is_main_process()
    bar = tqdm(
        total=total, initial=first_epoch * per_epoch, desc=name, disable=not show, leave=False
    )
    for epoch in range(first_epoch, config.epochs):
        if stop_after_epochs is not None and epoch - first_epoch >= stop_after_epochs:
            bar.close()
            return None
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        for x, y in DataLoader(train_set, **loader_options):
            step = len(losses)
            lr = train_config.optimizer.rate(step, total)
            losses.append(
                train_step(
                    net,
                    optimizer,
                    x.to(device, non_blocking=True),
                    y.to(device, non_blocking=True),
                    lr,
                )
            )
            if (step + 1) % config.record_every == 0 or step + 1 == total:
                rows.append(sample.take(model))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        state = {
            "fingerprint": _fingerprint(config),
            "finished": False,
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "losses": losses,
            "weights": torch.stack(rows),
        }
        _save(config, name, state)
    bar.close()
    logits = evaluate(model, eval_set, eval_indices, config.eval_batch_size, config.workers)
    labels = torch.tensor([eval_set.samples[i][1] for i in eval_indices.tolist()])
    accuracy = float((logits.argmax(1) == labels).double().mean())
    record = RunRecord(losses, torch.stack(rows), logits, accuracy)
    _save(
        config,
        name,
        {
            "fingerprint": _fingerprint(config),
            "finished": True,
            "losses": losses,
            "weights": record.weights,
            "logits": logits,
            "accuracy": accuracy,
        },
    )
    return record


def run_imagenet(
    config: ImageNetConfig, progress: bool | None = None, stop_after_epochs: int | None = None
) -> EquivalenceResult | None:
    """Train ``config.runs`` one after another and compare each with ``custom``; on the main
    process, write ``out/summary.json`` and return the result (``None`` on the other processes,
    and when ``stop_after_epochs`` stopped the work before the end)."""
    if stop_after_epochs is not None:
        int_at_least("stop_after_epochs", stop_after_epochs, 1)
    out = output_folder(config.out)
    (out / "runs").mkdir(exist_ok=True)
    device = distributed.local_device(config.device)
    train_set = ImageFolder(
        config.data_dir, "train", image_size=config.image_size, seed=config.seed
    )
    eval_set = ImageFolder(
        config.data_dir,
        "val",
        image_size=config.image_size,
        resize=config.resize,
        classes=train_set.classes,
    )
    eval_count = min(config.eval_examples, len(eval_set))
    eval_indices = (
        torch.linspace(0, len(eval_set) - 1, eval_count).round().long().unique()
    )  # every class
    runtime.seed_everything(config.seed)
    classes = len(train_set.classes)
    custom = build_model(config, config.estimator, classes)
    init = copy.deepcopy(custom.state_dict())
    sample = WeightSample(custom, config.recorded_weights, config.seed)
    est = estimators.get(config.estimator)
    m = next(iter(quantized_layers(custom).values())).m
    alpha = (
        est.alpha(config.bits, m) if needs_alpha(config.optimizer, config.runs) else float("nan")
    )
    result = EquivalenceResult(config, alpha, sample.m, sample.slices)
    for name, run in plan_runs(config.estimator, config.optimizer, config.runs, alpha).items():
        model = custom if name == "custom" else build_model(config, run.estimator, classes)
        model.load_state_dict(init)
        if run.remap:
            for layer in quantized_layers(model).values():
                layer.apply_weight_map(est)
        record = train_run(
            config,
            name,
            model.to(device),
            run,
            train_set,
            sample,
            eval_set,
            eval_indices,
            progress,
            stop_after_epochs,
        )
        if record is None:
            return None
        result.runs[name] = record
        model.cpu()
    if not distributed.is_main_process():
        return None
    compare(result)
    summary = result.to_dict() | {
        "architecture": config.architecture,
        "steps": len(result.runs["custom"].losses),
        "recorded_weights": int(sample.m.numel()),
        "record_every": config.record_every,
        "eval_examples": eval_count,
        "processes": distributed.place()[1],
    }
    atomic_write(
        out / "summary.json",
        lambda path: path.write_text(json.dumps(summary, indent=1)),
        overwrite=True,
    )
    return result
