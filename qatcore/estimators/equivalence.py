"""The first paper's experiment: does the adjusted STE run follow the custom-estimator run?

From one seed and one initialisation, four runs of the MNIST CNN are trained:

* ``custom``: the custom estimator, rate ``η``, initial weights ``w₀``;
* ``adjusted``: the STE as the theorem prescribes — for SGD (with momentum) initial weights
  ``M(w₀)`` and rate ``αη`` on the quantized weights; for Adam the same ``w₀`` and ``η``;
* ``ablation``: the STE without the adjustment its optimizer needs — for SGD the unadjusted STE,
  from ``w₀`` with ``η``; for Adam, whose theorem needs no adjustment, the STE given SGD's
  adjustments anyway (``M(w₀)``, ``αη``);
* ``jitter``: the custom estimator again with rate ``1.01·η``: how far two runs drift anyway.

Each is compared with ``custom`` by the metrics of ``qatcore.estimators.trajectory``. In ``M``-space for the
adjusted SGD pair (the custom run's weights mapped by ``M``), as they are for the others.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from qatcore import data as datasets
from qatcore import distributed, estimators, runtime
from qatcore.checks import check_choice, check_device, int_at_least, optional_text
from qatcore.estimators import stacked as stacked_runs
from qatcore.estimators import trajectory
from qatcore.estimators.layers import quantized_layers
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.train import TrainConfig, train
from qatcore.optimizers import OptimizerConfig

RUNS = ("custom", "adjusted", "ablation", "jitter")
JITTER = 1.01
#: Learning rates for the 8×8 digits default, chosen so a few hundred steps train the CNN
#: (the paper's MNIST rates, 1e-3 for SGD and 1e-4 for Adam, suit its 60 000 images).
DEFAULT_LR = {"sgd": 0.02, "adam": 1e-3}


def digits_optimizer(
    value: OptimizerConfig | Mapping | str = "sgd", lr: float | None = None
) -> OptimizerConfig:
    """The optimizer of ``value`` (``OptimizerConfig.of``) at rate ``lr``; a name or a table that sets no
    rate gets ``DEFAULT_LR[name]``, the digits rate."""
    config = OptimizerConfig.of(value)
    if lr is None and (isinstance(value, str) or isinstance(value, Mapping) and "lr" not in value):
        lr = DEFAULT_LR[config.name]
    return config if lr is None else replace(config, lr=lr)


def read_settings(
    path: str | os.PathLike, config_class: type, extra: tuple[str, ...] = (), **overrides
) -> dict:
    """The settings of a TOML experiment file (``configs/*.toml``): ``config_class``'s fields at top level,
    the optimizer as an ``[optimizer]`` table of ``OptimizerConfig`` fields, and the ``extra`` keys.

    ``overrides`` that are not ``None`` win; ``optimizer`` (a name) and ``lr`` go into the table.
    """
    with open(path, "rb") as handle:
        values = tomllib.load(handle)
    known = {f.name for f in fields(config_class)} | set(extra)
    given = {k for k, v in overrides.items() if v is not None} - {"optimizer", "lr"}
    unknown = sorted((set(values) | given) - known)
    if unknown:
        raise ValueError(
            f"{path}: unknown setting(s) {unknown}; allowed: {sorted(known)} "
            "(the optimizer's name, lr, momentum, … go in an [optimizer] table)"
        )
    table = values.get("optimizer", {})
    if not isinstance(table, str | dict):
        raise TypeError(
            f'{path}: optimizer must be a name (optimizer = "sgd") or an [optimizer] table, '
            f"got {table!r}"
        )
    table = {"name": table} if isinstance(table, str) else dict(table)
    for key, field_name in (("optimizer", "name"), ("lr", "lr")):
        if overrides.get(key) is not None:
            table[field_name] = overrides[key]
    values.update(
        {k: v for k, v in overrides.items() if v is not None and k not in ("optimizer", "lr")}
    )
    if table:
        values["optimizer"] = table
    return values


@dataclass(frozen=True)
class RunPlan:
    """How one run differs from ``custom``: its estimator, whether its initial weights are mapped
    by the custom estimator's ``M``, and its rate factors (all rates, and the quantized weights')."""

    estimator: str
    remap: bool = False
    lr_scale: float = 1.0
    quantized_lr_factor: float = 1.0


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """What every experiment of the first paper sets: the estimator, its bit width, the optimizer with
    its schedule (``qatcore.optimizers.OptimizerConfig``; ``lr`` is the custom run's rate ``η``), the
    batch size, epochs and seed. ``EquivalenceConfig`` and the ImageNet experiment's config add
    their data and hardware."""

    estimator: str = "dsq"
    bits: int = 2
    optimizer: OptimizerConfig = digits_optimizer("sgd")
    batch_size: int = 64
    epochs: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        estimators.definition(self.estimator)  # ValueError for an unknown name
        object.__setattr__(self, "optimizer", OptimizerConfig.of(self.optimizer))
        for name in ("bits", "batch_size", "epochs"):
            int_at_least(name, getattr(self, name), 1)
        int_at_least("seed", self.seed, 0)

    def train_config(self, run: RunPlan | None = None) -> TrainConfig:
        """The ``TrainConfig`` of ``run``, with its rate factors (``custom``'s when ``None``)."""
        run = RunPlan(self.estimator) if run is None else run
        return TrainConfig(
            optimizer=self.optimizer.scaled(run.lr_scale),
            batch_size=self.batch_size,
            epochs=self.epochs,
            seed=self.seed,
            quantized_lr_factor=run.quantized_lr_factor,
        )


@dataclass(frozen=True, kw_only=True)
class EquivalenceConfig(Experiment):
    """One experiment on the MNIST CNN: the shared settings, the data and the device.

    ``optimizer`` may be given as a name (``"sgd"``, ``"adam"``) or a table of settings: the digits
    rate of ``DEFAULT_LR`` applies unless it sets ``lr``; an ``OptimizerConfig`` sets everything.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    device: str = "cpu"  # "cuda" trains on a GPU; the records stay on the CPU

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, OptimizerConfig):
            object.__setattr__(self, "optimizer", digits_optimizer(self.optimizer))
        super().__post_init__()
        check_choice("dataset", self.dataset, datasets.DATASETS)
        optional_text("data_dir", self.data_dir)
        check_device("device", self.device)


@dataclass
class RunRecord:
    """What one run leaves: per-step losses, latent quantized weights at every step (T+1 × N,
    float32, columns = the quantized layers' weights flattened in order), test logits."""

    losses: list[float]
    weights: torch.Tensor
    test_logits: torch.Tensor
    test_accuracy: float
    #: per-epoch curves, for the authors' correlations (the test curves empty where not recorded)
    history: trajectory.History | None = None


@dataclass
class EquivalenceResult:
    """The four runs, the per-column range ``m``, ``α``, and the agreement of each run with ``custom``."""

    config: Experiment
    alpha: float
    m: torch.Tensor
    layer_slices: dict[str, slice]
    runs: dict[str, RunRecord] = field(default_factory=dict)
    agreements: dict[str, trajectory.Agreement] = field(default_factory=dict)
    labels: torch.Tensor | None = None  # test labels, for the authors' wrong-prediction agreement
    #: the authors' metrics of each pair (``trajectory.authors_metrics``), where the runs kept histories
    authors: dict[str, dict[str, float]] = field(default_factory=dict)
    #: ``levels`` and ``mapped_custom``, computed once (the comparison and the plots both read them)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    def levels(self, run: str) -> torch.Tensor:
        """Level index of every quantized weight at every step of ``run``."""
        key = ("levels", run, id(self.runs[run]))
        if key not in self._memo:
            weights = self.runs[run].weights.double()
            self._memo[key] = trajectory.level_indices(weights, self.config.bits, self.m)
        return self._memo[key]

    def mapped_custom(
        self, steps: slice | None = None, columns: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The custom run's trajectory mapped by ``M`` (layer by layer), in float64: the whole of it
        (computed once), or only the rows ``steps`` and the weights ``columns`` (indices), mapped
        on their own. ``M`` acts weight by weight, so a part equals that part of the whole; the
        comparison reads the last step, the plot a few weights' paths."""
        key = ("mapped_custom", id(self.runs["custom"]))
        whole = self._memo.get(key)
        if steps is None and columns is None:
            if whole is None:
                whole = self._memo[key] = self._weight_map(self.runs["custom"].weights)
            return whole
        part = self.runs["custom"].weights if whole is None else whole
        part = part[slice(None) if steps is None else steps]
        part = part if columns is None else part[:, columns]
        return part if whole is not None else self._weight_map(part, columns)

    def _weight_map(
        self, weights: torch.Tensor, columns: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``M`` of ``weights`` in float64, layer by layer; its columns are the weights ``columns``
        (indices; all of them, in order, when ``None``)."""
        est = estimators.get(self.config.estimator)
        weights = weights.double()
        mapped = torch.empty_like(weights)
        for sl in self.layer_slices.values():
            at = sl if columns is None else (columns >= sl.start) & (columns < sl.stop)
            m = float(self.m[sl.start])
            mapped[:, at] = est.weight_map(weights[:, at], self.config.bits, m)
        return mapped

    def to_dict(self) -> dict:
        """JSON-ready summary: the headline numbers first, then every metric of every pair."""

        def metric(pair: str, name: str) -> float | None:
            return (
                round(getattr(self.agreements[pair], name), 6) if pair in self.agreements else None
            )

        return {
            "estimator": self.config.estimator,
            "bits": self.config.bits,
            "optimizer": self.config.optimizer.name,
            "lr": self.config.optimizer.lr,
            "alpha": None if math.isnan(self.alpha) else round(self.alpha, 6),
            "quantized_weight_agreement": metric("adjusted", "quantized_weight_agreement"),
            "alignment_error": metric("adjusted", "alignment_error"),
            "jitter_agreement": metric("jitter", "quantized_weight_agreement"),
            "ablation_agreement": metric("ablation", "quantized_weight_agreement"),
            "test_accuracy": {name: round(run.test_accuracy, 4) for name, run in self.runs.items()},
            "pairs": {name: a.to_dict() for name, a in self.agreements.items()},
            "authors_pairs": {
                name: {k: round(v, 6) if math.isfinite(v) else v for k, v in metrics.items()}
                for name, metrics in self.authors.items()
            },
            "config": asdict(self.config),
        }


class RunCache:
    """Runs already trained, for ``run_equivalence`` to reuse instead of training them again.

    Training is deterministic: a run is fixed by its data, initial weights, estimator, start
    (``M(w₀)`` of which estimator, or ``w₀``), training settings, device and thread count, and
    two experiments that share such a run (the plain STE of SGD is the ``ablation`` of every
    estimator's experiment at one seed; a widget's opening state and a cell that recomputes it)
    get the same record, bit for bit, without training it twice. One cache serves one session:
    it keeps the datasets it has seen alive, so their ids stay theirs. It holds runs trained one by
    one only: a stacked run (``run_experiments(stack_size=…)``) equals its run within float
    tolerance, not bit for bit, so it is used but not kept.
    """

    def __init__(self) -> None:
        self._records: dict[tuple, RunRecord] = {}
        self._data: dict[int, datasets.Dataset] = {}
        self.hits = 0  # runs reused rather than trained

    def __len__(self) -> int:
        return len(self._records)

    def key(
        self,
        data: datasets.Dataset,
        init: dict[str, torch.Tensor],
        config: EquivalenceConfig,
        run: RunPlan,
        train_config: TrainConfig,
        test_curves: bool = True,
    ) -> tuple:
        """What fixes one run: the data, the initial weights (a digest), the run's estimator and
        start, its ``TrainConfig``, the bit width, the device and the thread count; and what its
        record holds (``test_curves``: the test loss and accuracy after every epoch, or not)."""
        self._data.setdefault(id(data), data)
        digest = hashlib.sha256()
        for name, tensor in init.items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        start = config.estimator if run.remap else None
        return (
            id(data),
            digest.hexdigest(),
            run.estimator,
            start,
            train_config,
            config.bits,
            config.device,
            torch.get_num_threads(),
            test_curves,
        )

    def get(self, key: tuple) -> RunRecord | None:
        """The record stored under ``key``, or ``None``."""
        record = self._records.get(key)
        self.hits += record is not None
        return record

    def put(self, key: tuple, record: RunRecord) -> None:
        self._records[key] = record


def _flat_weights(model: nn.Module) -> torch.Tensor:
    return torch.cat(
        [layer.weight.detach().reshape(-1).cpu() for layer in quantized_layers(model).values()]
    )


def _test_logits(model: nn.Module, data: datasets.Dataset) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = torch.cat([model(x.to(device)).cpu() for x in data.x_test.split(1000)])
    model.train(was_training)
    return logits


def _record(
    losses: list[float],
    weights: torch.Tensor,
    epoch_logits: list[torch.Tensor],
    data: datasets.Dataset,
    epochs: int,
    test_curves: bool,
) -> RunRecord:
    """A run's record from its per-step losses, weights (T+1 × N) and the test logits after each
    tested epoch: the per-epoch history (the test curves empty with ``test_curves=False``) and the
    final logits and accuracy, which are the last epoch's."""
    per_epoch = torch.tensor(losses, dtype=torch.float64).reshape(epochs, -1)
    curves = epoch_logits if test_curves else []  # the last epoch's test alone is no curve
    history = trajectory.History(
        per_epoch.mean(dim=1).tolist(),
        [float(F.cross_entropy(logits, data.y_test)) for logits in curves],
        [float((logits.argmax(dim=1) == data.y_test).double().mean()) for logits in curves],
    )
    logits = epoch_logits[-1]
    correct = int((logits.argmax(dim=1) == data.y_test).sum())  # as metrics.accuracy counts
    return RunRecord(losses, weights, logits, correct / len(data.y_test), history)


def _train_recorded(
    model: nn.Module,
    data: datasets.Dataset,
    config: TrainConfig,
    progress,
    test_curves: bool = True,
) -> RunRecord:
    """Train, recording the latent quantized weights after every step and, as the authors do, the
    test loss and accuracy after every epoch. The last step ends an epoch, so that epoch's test
    logits are the trained model's: they give the final logits and accuracy, with no second pass.

    ``test_curves=False`` tests after the last step only: the same final logits and accuracy, and
    empty test curves in the history (the authors' two correlations of them are then ``nan``)."""
    rows = [_flat_weights(model)]
    local, local_batch = distributed.shard(torch.arange(len(data.x_train)), config.batch_size)
    per_epoch = math.ceil(len(local) / local_batch)
    last = per_epoch * config.epochs
    epoch_logits: list[torch.Tensor] = []  # the test logits after each epoch tested

    def on_step(step: int, mod: nn.Module) -> None:
        rows.append(_flat_weights(mod))
        if step % per_epoch == 0 and (test_curves or step == last):
            epoch_logits.append(_test_logits(mod, data))

    result = train(model, data, config, progress=progress, on_step=on_step, evaluate=False)
    return _record(result.losses, torch.stack(rows), epoch_logits, data, config.epochs, test_curves)


def _model(
    config: EquivalenceConfig, estimator: str, init: dict, image_size: int, classes: int
) -> MNISTCNN:
    model = MNISTCNN(
        bits=config.bits, estimator=estimator, image_size=image_size, num_classes=classes
    )
    model.load_state_dict(init)
    return model.to(config.device)


def check_runs(runs: tuple[str, ...]) -> None:
    """ValueError unless ``runs`` holds ``custom`` and names taken from ``RUNS``."""
    if "custom" not in runs or set(runs) - set(RUNS):
        raise ValueError(f"runs must include 'custom' and be taken from {RUNS}, got {runs!r}")


def remapped_run(optimizer: OptimizerConfig) -> str:
    """The run started from ``M(w₀)`` with ``α·η``: ``adjusted`` with SGD, the ``ablation`` with Adam."""
    return "adjusted" if optimizer.name == "sgd" else "ablation"


def needs_alpha(optimizer: OptimizerConfig, runs: tuple[str, ...]) -> bool:
    """Whether one of ``runs`` is started from ``M(w₀)`` with ``α·η`` (so ``α`` must exist)."""
    return remapped_run(optimizer) in runs


def plan_runs(
    estimator: str, optimizer: OptimizerConfig, runs: tuple[str, ...], alpha: float
) -> dict[str, RunPlan]:
    """The plan of each of ``runs``: with SGD the ``adjusted`` STE gets ``M(w₀)`` and ``α·η``; with
    Adam it gets neither and the ``ablation`` gets both."""
    check_runs(runs)
    remapped = remapped_run(optimizer)
    plan = {"custom": RunPlan(estimator)}
    for name in ("adjusted", "ablation"):
        if name in runs:
            plan[name] = RunPlan("ste", True, 1.0, alpha) if name == remapped else RunPlan("ste")
    if "jitter" in runs:
        plan["jitter"] = RunPlan(estimator, lr_scale=JITTER)
    return plan


def compare(result: EquivalenceResult) -> None:
    """Fill ``result.agreements``: every run against ``custom`` (the adjusted SGD run in ``M``-space)."""
    custom = result.runs["custom"]
    custom_levels = result.levels("custom")
    for name in (n for n in RUNS[1:] if n in result.runs):
        other = result.runs[name]
        in_m_space = name == remapped_run(result.config.optimizer) == "adjusted"
        # the alignment error reads the custom run's last step only: only that step is mapped
        final = result.mapped_custom(steps=slice(-1, None)) if in_m_space else custom.weights[-1:]
        result.agreements[name] = trajectory.compare_runs(
            custom_levels,
            result.levels(name),
            final,
            other.weights,
            result.m,
            custom.test_logits,
            other.test_logits,
            custom.losses,
            other.losses,
        )
        if result.labels is not None and custom.history is not None and other.history is not None:
            result.authors[name] = trajectory.authors_metrics(
                custom_levels,
                result.levels(name),
                custom.test_logits,
                other.test_logits,
                result.labels,
                custom.history,
                other.history,
            )


@dataclass
class _Prepared:
    """One experiment ready to train: its result (to fill), each run's model, training settings and
    cache key (``None`` without a cache)."""

    result: EquivalenceResult
    device: str
    models: dict[str, MNISTCNN]
    configs: dict[str, TrainConfig]
    keys: dict[str, tuple | None]


def _prepare(
    config: EquivalenceConfig,
    data: datasets.Dataset,
    runs: tuple[str, ...],
    cache: RunCache | None,
    test_curves: bool,
) -> _Prepared:
    """Seed, build ``custom`` and the other runs' models from its initial weights, and take every run
    the cache already holds."""
    check_runs(runs)
    runtime.seed_everything(config.seed)
    shape = dict(image_size=data.image_size, classes=data.num_classes)
    custom_model = MNISTCNN(config.bits, config.estimator, data.image_size, data.num_classes).to(
        config.device
    )
    layers = quantized_layers(custom_model)
    est = estimators.get(config.estimator)
    ms = {name: layer.m for name, layer in layers.items()}
    init = copy.deepcopy(custom_model.state_dict())
    # α is the same for every layer (Δ ∝ m); asked only when a run needs it
    alpha = (
        est.alpha(config.bits, next(iter(ms.values())))
        if needs_alpha(config.optimizer, runs)
        else float("nan")
    )
    models = {"custom": custom_model}
    plan = plan_runs(config.estimator, config.optimizer, runs, alpha)
    for name, run in plan.items():
        if name != "custom":
            models[name] = _model(config, run.estimator, init, **shape)
            if run.remap:
                for layer in quantized_layers(models[name]).values():
                    layer.apply_weight_map(est)
    sizes = [layer.weight.numel() for layer in layers.values()]
    starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
    slices = {name: slice(starts[i], starts[i + 1]) for i, name in enumerate(layers)}
    m = torch.cat(
        [
            torch.full((n,), ms[name], dtype=torch.float64)
            for name, n in zip(layers, sizes, strict=True)
        ]
    )
    prepared = _Prepared(
        EquivalenceResult(config, alpha, m, slices, labels=data.y_test),
        config.device,
        models,
        {},
        {},
    )
    for name, run in plan.items():
        train_config = prepared.configs[name] = config.train_config(run)
        key = prepared.keys[name] = (
            None if cache is None else cache.key(data, init, config, run, train_config, test_curves)
        )
        record = None if cache is None or key is None else cache.get(key)
        if record is not None:
            prepared.result.runs[name] = record
    return prepared


def _train_prepared(
    experiments: list[_Prepared],
    data: datasets.Dataset,
    progress,
    cache: RunCache | None,
    test_curves: bool,
    stack_size: int | None,
) -> None:
    """Train every run the experiments still lack: one by one (``stack_size=None``), or the runs
    that take the same steps on one device together, at most ``stack_size`` to a stacked network
    (``qatcore.estimators.stacked``)."""
    todo = [
        (prepared, name)
        for prepared in experiments
        for name in prepared.configs
        if name not in prepared.result.runs
    ]
    if not stack_size:
        for prepared, name in todo:
            record = _train_recorded(
                prepared.models[name], data, prepared.configs[name], progress, test_curves
            )
            prepared.result.runs[name] = record
            if cache is not None and (key := prepared.keys[name]) is not None:
                cache.put(key, record)
        return
    groups: dict[tuple, list[tuple[_Prepared, str]]] = {}
    for prepared, name in todo:
        config = prepared.configs[name]
        groups.setdefault((config.batch_size, config.epochs, prepared.device), []).append(
            (prepared, name)
        )
    for group in groups.values():
        for start in range(0, len(group), stack_size):
            chunk = group[start : start + stack_size]
            records = stacked_runs.train_stacked(
                [p.models[name] for p, name in chunk],
                data,
                [p.configs[name] for p, name in chunk],
                progress,
                test_curves,
            )
            # not kept in the cache: a stacked record is its run only within float tolerance
            for (prepared, name), r in zip(chunk, records, strict=True):
                epochs = prepared.configs[name].epochs
                prepared.result.runs[name] = _record(
                    r.losses, r.weights, r.epoch_logits, data, epochs, test_curves
                )


def run_experiments(
    experiments: list[tuple[EquivalenceConfig, tuple[str, ...]]],
    data: datasets.Dataset,
    progress: bool | None = None,
    cache: RunCache | None = None,
    test_curves: bool = True,
    stack_size: int | None = None,
) -> list[EquivalenceResult]:
    """``run_equivalence`` of every ``(config, runs)`` in ``experiments``, on one dataset.

    ``stack_size=N`` trains the runs of all the experiments that take the same steps (batch size,
    epochs, device) as stacked networks of at most ``N`` runs (``qatcore.estimators.stacked``), each
    run with its own seed, estimator, bit width and rate: the same records as training them one by
    one, within float tolerance, in fewer, larger operations (on a GPU, time goes from kernel
    launches to work). ``None`` trains them one by one.
    """
    if stack_size is not None:
        int_at_least("stack_size", stack_size, 1)
    prepared = [_prepare(config, data, runs, cache, test_curves) for config, runs in experiments]
    _train_prepared(prepared, data, progress, cache, test_curves, stack_size)
    for p in prepared:
        p.result.runs = {name: p.result.runs[name] for name in p.configs}  # in plan order
        compare(p.result)
    return [p.result for p in prepared]


def run_equivalence(
    config: EquivalenceConfig = EquivalenceConfig(),
    data: datasets.Dataset | None = None,
    progress: bool | None = None,
    runs: tuple[str, ...] = RUNS,
    cache: RunCache | None = None,
    test_curves: bool = True,
    stack_size: int | None = None,
) -> EquivalenceResult:
    """Train ``runs`` (``custom`` and any of the others) and measure how closely each follows
    ``custom``.

    With a ``cache`` (``RunCache``), a run it already holds is taken from it instead of trained
    again (the same record, bit for bit), and each run trained here is added to it.

    ``test_curves=False`` skips the test pass after every epoch but the last, for a caller that
    reads no per-epoch test curve: every metric is the same but the authors' correlations of
    those curves (``val_loss_correlation``, ``val_accuracy_correlation``), which are ``nan``.

    ``stack_size``: train the runs together, as stacked networks of at most that many runs
    (``run_experiments``); ``None`` trains them one by one.

    Raises ValueError (with notebook 01's reason) when a run needs the weight map or α of an
    estimator that has none; ``runs=("custom", "ablation", "jitter")`` works for any estimator
    with SGD.
    """
    check_runs(runs)
    data = datasets.load(config.dataset, config.data_dir) if data is None else data
    (result,) = run_experiments([(config, runs)], data, progress, cache, test_curves, stack_size)
    return result


def loose_bound_share(result: EquivalenceResult) -> float:
    """Share of the custom run's (step, weight) pairs in which the theorem's remainder bound
    ``½αL(L₊/L₋)²(ηg)²`` is larger than the first-order step ``αη|g|`` itself, i.e.
    ``η|g| > 2/(L(L₊/L₋)²)``, with ``η|g| = |w_{t+1} − w_t| / Q̂′(w_t)`` read off the recorded run.
    Weights outside the range (``Q̂′ = 0``) are left out. Where the share is large the bound is loose.
    """
    from qatcore.estimators import theory

    est = estimators.get(result.config.estimator)
    weights = result.runs["custom"].weights.double()
    exceeded, counted = 0, 0
    for sl in result.layer_slices.values():
        m = float(result.m[sl.start])
        limits = theory.check_assumptions(est, result.config.bits, m).expressions
        curvature = float(limits["L"]) * (float(limits["L_plus"]) / float(limits["L_minus"])) ** 2
        critical = (
            2 / curvature if curvature > 0 else math.inf
        )  # a flat Q̂′ (the STE) has no remainder
        w = weights[:, sl]
        slope = est.derivative(w[:-1], result.config.bits, m)
        inside = slope > 0
        steps = w.diff(dim=0).abs()[inside] / slope[inside]
        exceeded += int((steps > critical).sum())
        counted += int(inside.sum())
    return exceeded / counted if counted else math.nan
