"""The authors' runs of the first paper's experiment, by name, over seeds.

The paper's experiment code (GitHub mschoenb97/flax, examples/mnist/run_experiments.py,
``run_full_analysis``, ``get_train_kwargs`` and ``get_quantizer_kwargs``) compares a DSQ run with:

* ``main``: the STE as the theorem prescribes (SGD: ``M(w₀)`` and ``αη``; Adam: neither);
* ``jitter``: DSQ again at rate ``1.01·η``;
* ``no_warp``: SGD's STE without ``M`` and without ``α`` (with Adam the main pair already has neither);
* ``scaledown``: the main pair again at rate ``0.1·η`` for 3× the epochs;
* ``bits_1``, ``bits_4``: SGD's main pair at other bit widths (2 is the default). The authors run
  these with SGD only (``get_quantizer_kwargs`` starts from ``get_default_kwargs``: SGD, ``M``,
  the SGD rate and epochs), so they are named for SGD only.

This is the run list of ``run_full_analysis`` after their commit 5bfb1e8a (19 Jan 2024), with both
optimizers, as its commented-out line ``optimizer_types = ['sgd', 'adam']`` has it. Before that
commit their STE runs of both optimizers started from ``M(w₀)`` with ``α = 1``; at their latest
commit (21139dd2) only Adam's runs are enabled and the ``bits_*`` runs stop with a TypeError.

One run is ours, not theirs: ``ablation_ours``, Adam's STE given SGD's adjustments
(``M(w₀)`` and ``αη``) anyway. In the authors' code their STE is called "pwl" (the STE scaled by
``α`` inside the range), which is not this package's tent-shaped ``pwl`` estimator.

Each named run is a pair compared by our metrics (``ours``) and by the authors' own
definitions (``authors``), keyed by metric name; ``run_seeds`` repeats them over seeds and reports
each metric's mean and sd.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from qatcore import data as datasets
from qatcore.checks import int_at_least
from qatcore.estimators.equivalence import (
    RUNS,
    EquivalenceConfig,
    EquivalenceResult,
    read_settings,
    run_experiments,
)
from qatcore.optimizers import OptimizerConfig
from qatcore.stats import MeanSd

AUTHORS_RUNS = ("main", "jitter", "no_warp", "scaledown", "bits_1", "bits_4")
OUR_RUNS = ("ablation_ours",)
NAMED_RUNS = AUTHORS_RUNS + OUR_RUNS
#: the authors' ``lr_scaledown`` and ``epoch_scale_up_for_lr_scale_down`` (round_*/config.py)
SCALEDOWN_LR, SCALEDOWN_EPOCHS = 0.1, 3
#: the run of ``run_equivalence`` behind each named run that shares the main run's custom run
_SHARED = {
    "main": "adjusted",
    "jitter": "jitter",
    "no_warp": "ablation",
    "ablation_ours": "ablation",
}
#: our bar for the adjusted-vs-jitter claim: the adjusted pair's quantized weight agreement at
#: least the jitter pair's minus 1 point, on the mean over seeds by two standard errors
JITTER_BAR = -1.0


def default_runs(optimizer: OptimizerConfig | str, bits: int = 2) -> tuple[str, ...]:
    """Every named run of the authors' that applies to ``optimizer`` (with SGD, the bit widths other
    than ``bits``), and with Adam our ``ablation_ours``."""
    if OptimizerConfig.of(optimizer).name == "sgd":
        other_bits = tuple(f"bits_{b}" for b in (1, 2, 4) if b != bits)
        return ("main", "jitter", "no_warp", "scaledown", *other_bits)
    return ("main", "jitter", "scaledown", *OUR_RUNS)


def check_runs(names: tuple[str, ...], optimizer: OptimizerConfig | str) -> None:
    """ValueError for an unknown name, or a run that does not apply to ``optimizer``."""
    sgd = OptimizerConfig.of(optimizer).name == "sgd"
    allowed = (*NAMED_RUNS, "bits_2")
    if not names or set(names) - set(allowed):
        raise ValueError(f"runs must be taken from {allowed}, got {names!r}")
    if not sgd and "no_warp" in names:
        raise ValueError(
            "runs: no_warp applies to SGD only (with Adam the main pair has neither M nor α)"
        )
    if not sgd and any(n.startswith("bits_") for n in names):
        raise ValueError(
            "runs: bits_1, bits_2 and bits_4 apply to SGD only (the authors run other bit widths "
            "with SGD's settings; for Adam at another width set bits instead)"
        )
    if sgd and "ablation_ours" in names:
        raise ValueError(
            "runs: ablation_ours applies to Adam only (with SGD it is the authors' no_warp)"
        )


def _pair(result: EquivalenceResult, name: str) -> dict:
    """One pair's settings, test accuracies and every metric, ours and the authors'."""

    def rounded(v: float) -> float:
        return round(v, 6) if math.isfinite(v) else v

    return {
        "bits": result.config.bits,
        "lr": result.config.optimizer.lr,
        "epochs": result.config.epochs,
        "alpha": None if math.isnan(result.alpha) else round(result.alpha, 6),
        "test_accuracy": {
            "custom": round(result.runs["custom"].test_accuracy, 4),
            "other": round(result.runs[name].test_accuracy, 4),
        },
        "ours": result.agreements[name].to_dict(),
        "authors": {k: rounded(v) for k, v in result.authors[name].items()},
    }


def _experiments(
    config: EquivalenceConfig, names: tuple[str, ...]
) -> list[tuple[EquivalenceConfig, tuple[str, ...], dict[str, str]]]:
    """The experiments behind ``names`` at one seed: each config, its runs, and the named pairs it
    gives (name: the run compared with ``custom``). The runs that share the main custom run
    (main, jitter, no_warp, ablation_ours) are one experiment, so it trains once."""
    experiments = []
    shared = [n for n in names if n in _SHARED]
    if shared:
        runs = ("custom", *(r for r in RUNS[1:] if r in {_SHARED[n] for n in shared}))
        experiments.append((config, runs, {n: _SHARED[n] for n in shared}))
    for name in (n for n in names if n not in _SHARED):
        if name == "scaledown":
            changed = replace(
                config,
                optimizer=config.optimizer.scaled(SCALEDOWN_LR),
                epochs=config.epochs * SCALEDOWN_EPOCHS,
            )
        else:
            changed = replace(config, bits=int(name.removeprefix("bits_")))
        experiments.append((changed, ("custom", "adjusted"), {name: "adjusted"}))
    return experiments


def _named_pairs(
    configs: list[EquivalenceConfig],
    names: tuple[str, ...],
    data: datasets.Dataset,
    progress: bool | None,
    stack_size: int | None,
) -> list[dict[str, dict]]:
    """``run_named`` of every config (seed), trained together: with ``stack_size`` (``None``: one by
    one) the runs that take the same steps are stacked, that many at most in one network."""
    planned = [_experiments(config, names) for config in configs]
    flat = [(config, runs) for experiments in planned for config, runs, _ in experiments]
    results = iter(run_experiments(flat, data, progress, stack_size=stack_size))
    per_seed = []
    for experiments in planned:
        pairs: dict[str, dict] = {}
        for _, _, named in experiments:
            result = next(results)
            pairs.update({name: _pair(result, run) for name, run in named.items()})
        per_seed.append({n: pairs[n] for n in names})
    return per_seed


def run_named(
    config: EquivalenceConfig,
    names: tuple[str, ...] | None = None,
    data: datasets.Dataset | None = None,
    progress: bool | None = None,
    stack_size: int | None = None,
) -> dict[str, dict]:
    """Train the named runs (default: ``default_runs``) of one seed; each name's pair as ``_pair`` gives it.

    The runs that share the main custom run (main, jitter, no_warp, ablation_ours) train it once.
    ``stack_size``: train the runs that take the same steps as stacked networks of at most that
    many runs (``equivalence.run_experiments``); ``None`` trains them one by one.
    """
    names = default_runs(config.optimizer, config.bits) if names is None else tuple(names)
    check_runs(names, config.optimizer)
    data = datasets.load(config.dataset, config.data_dir) if data is None else data
    return _named_pairs([config], names, data, progress, stack_size)[0]


def _one_seed(args: tuple[EquivalenceConfig, tuple[str, ...] | None]) -> dict[str, dict]:
    config, names = args
    return run_named(config, names, progress=False)


def summarize(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Each pair's metrics (ours and the authors') as ``{"mean", "sd", "n"}`` over seeds (the finite values;
    ``None`` where no seed gave one)."""

    def mean_sd(values: list[float]) -> dict | None:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return None
        s = MeanSd.of(finite)
        return {"mean": round(s.mean, 6), "sd": round(s.sd, 6), "n": s.n}

    out: dict[str, dict] = {}
    for name, first in per_seed[0].items():
        out[name] = {k: first[k] for k in ("bits", "lr", "epochs", "alpha")}
        for group in ("test_accuracy", "ours", "authors"):
            out[name][group] = {
                k: mean_sd([seed[name][group][k] for seed in per_seed]) for k in first[group]
            }
    return out


def jitter_claim(per_seed: list[dict[str, dict]]) -> dict:
    """Adjusted (main) minus jitter quantized weight agreement, in points, over seeds: its mean, sd,
    the lower bound mean − 2 standard errors, our bar ``JITTER_BAR`` and the margin by which it holds."""
    gaps = MeanSd.of(
        [
            100
            * (
                s["main"]["ours"]["quantized_weight_agreement"]
                - s["jitter"]["ours"]["quantized_weight_agreement"]
            )
            for s in per_seed
        ]
    )
    return {
        "claim": "main-pair quantized weight agreement ≥ jitter pair's − 1 point, on the mean by 2 standard errors",
        "mean": round(gaps.mean, 4),
        "sd": round(gaps.sd, 4),
        "n": gaps.n,
        "lower": round(gaps.lower(), 4),
        "bar": JITTER_BAR,
        "margin": round(gaps.lower() - JITTER_BAR, 4),
        "holds": gaps.lower() >= JITTER_BAR,
    }


def run_seeds(
    config: EquivalenceConfig,
    names: tuple[str, ...] | None = None,
    seeds: int = 3,
    workers: int = 1,
    data: datasets.Dataset | None = None,
    progress: bool | None = None,
    stack_size: int | None = None,
) -> dict:
    """The named runs for seeds ``config.seed … config.seed + seeds − 1``: per-seed pairs, their mean and sd,
    and the adjusted-vs-jitter claim where both runs are named.

    ``workers > 1`` trains seeds in that many processes (each loads the data itself); the numbers
    are the same as with one, since every run seeds itself. ``stack_size`` trains the runs of all
    seeds that take the same steps as stacked networks of at most that many runs, in this process
    (``equivalence.run_experiments``): the same numbers within float tolerance.
    """
    int_at_least("seeds", seeds, 1)
    int_at_least("workers", workers, 1)
    if stack_size is not None and workers > 1:
        raise ValueError("workers and stack_size are two ways to share the work: choose one")
    names = default_runs(config.optimizer, config.bits) if names is None else tuple(names)
    check_runs(names, config.optimizer)
    configs = [replace(config, seed=config.seed + i) for i in range(seeds)]
    if workers > 1 and seeds > 1:
        with ProcessPoolExecutor(min(workers, seeds)) as pool:
            per_seed = list(pool.map(_one_seed, [(c, names) for c in configs]))
    else:
        data = datasets.load(config.dataset, config.data_dir) if data is None else data
        per_seed = _named_pairs(configs, names, data, progress, stack_size)
    report = {
        "estimator": config.estimator,
        "bits": config.bits,
        "optimizer": config.optimizer.name,
        "lr": config.optimizer.lr,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "dataset": config.dataset,
        "seeds": [c.seed for c in configs],
        "runs": summarize(per_seed),
        "per_seed": per_seed,
    }
    if {"main", "jitter"} <= set(names):
        report["adjusted_vs_jitter"] = jitter_claim(per_seed)
    return report


def load_config(
    path: str | os.PathLike, **overrides
) -> tuple[EquivalenceConfig, tuple[str, ...] | None, int]:
    """A TOML experiment (``configs/paper_mnist_*.toml``, read by ``read_settings``): the ``EquivalenceConfig``,
    plus ``runs`` (names) and ``seeds``; ``overrides`` not ``None`` take precedence. Returns (config, runs, seeds)."""
    values = read_settings(path, EquivalenceConfig, ("runs", "seeds"), **overrides)
    runs = values.pop("runs", None)
    seeds = values.pop("seeds", 1)
    return EquivalenceConfig(**values), None if runs is None else tuple(runs), seeds


# --- the authors' whole table: what it holds, and the paper's claims on it -------------------

#: the authors' ``steps_per_epoch`` (round_*/config.py): 60 000 images in batches of 600
AUTHORS_STEPS_PER_EPOCH = 100
#: a run of the authors' table has trained when its test accuracy clears this (chance is 0.1)
TRAINED_ACCURACY = 0.5
#: the metrics shown per run: ours, then the authors' (their names)
TABLE_METRICS = (
    ("ours", "quantized_weight_agreement"),
    ("ours", "alignment_error"),
    ("ours", "change_point_agreement"),
    ("authors", "exact_correct_sequences_proportion"),
    ("authors", "average_exact_step_count_error"),
    ("authors", "correct_sequences_proportion"),
    ("authors", "average_step_count_error"),
    ("authors", "total_q_oscillation"),
    ("authors", "total_i_oscillation"),
    ("authors", "average_oscillation_error"),
    ("authors", "inference_agreement_proportion"),
    ("authors", "logit_mse"),
    ("authors", "val_accuracy_correlation"),
)


def estimator_label(estimator: str) -> str:
    """``estimator`` as a table names it beside the authors' results: this package's ``pwl`` is a
    tent-shaped ``Q̂′``, not the authors' "pwl" (their α-scaled STE)."""
    if estimator == "pwl":
        return "pwl (the course's tent-shaped Q̂′; the authors' \"pwl\" is their α-scaled STE)"
    return estimator


def _cell(summary: dict | None) -> str:
    if summary is None:
        return "n/a"
    if summary["n"] == 1:
        return f"{summary['mean']:.4g}"
    return f"{summary['mean']:.4g} ± {summary['sd']:.2g}"


def format_table(report: dict, steps_per_epoch: int | None = AUTHORS_STEPS_PER_EPOCH) -> str:
    """A markdown table of one ``run_seeds`` report: a column per named run, a row per setting and
    metric (``TABLE_METRICS``, then the test accuracies); mean (± sd over seeds). With
    ``steps_per_epoch`` the settings give each run's number of steps."""
    runs = list(report["runs"])
    pairs = [report["runs"][r] for r in runs]

    def schedule(p: dict) -> str:
        steps = "" if steps_per_epoch is None else f", {p['epochs'] * steps_per_epoch}"
        return f"{p['lr']:g}, {p['epochs']}{steps}"

    rows = [
        f"| | {' | '.join(runs)} |",
        f"|---|{'---|' * len(runs)}",
        "| bits, α | " + " | ".join(f"{p['bits']}, {p['alpha']}" for p in pairs) + " |",
        f"| lr, epochs{'' if steps_per_epoch is None else ', steps'} | "
        + " | ".join(schedule(p) for p in pairs)
        + " |",
    ]
    for group, metric in TABLE_METRICS:
        label = f"{'theirs' if group == 'authors' else 'ours'}: {metric}"
        rows.append(f"| {label} | " + " | ".join(_cell(p[group].get(metric)) for p in pairs) + " |")
    for who in ("custom", "other"):
        cells = " | ".join(_cell(p["test_accuracy"][who]) for p in pairs)
        rows.append(f"| test accuracy, {'DSQ' if who == 'custom' else 'other'} run | {cells} |")
    return "\n".join(rows)


def paper_claims(table: dict) -> list[tuple[str, bool, str]]:
    """The paper's claims on the authors' whole table (the JSON ``bench/equivalence_paper.py``
    writes): for each optimizer, the run trained (test accuracy ≥ ``TRAINED_ACCURACY``), and the
    main pair agrees at least as well as the jitter pair minus 1 point (``jitter_claim``: the mean
    over seeds by two standard errors). With SGD the main pair's STE has ``M(w₀)`` and ``αη``; with
    Adam it has neither, which is the claim that Adam needs no adjustment.

    Returns ``(claim, holds, numbers)`` for each; optimizers absent from ``table`` give none.
    """
    claims = []
    for optimizer, main in (
        ("sgd", "SGD: the STE from M(w₀) at rate αη"),
        ("adam", "Adam: the plain STE, same start and rate"),
    ):
        report = table["experiments"].get(f"dsq-{optimizer}")
        if report is None or "adjusted_vs_jitter" not in report:
            continue
        accuracy = report["runs"]["main"]["test_accuracy"]["custom"]["mean"]
        claims.append(
            (
                f"{optimizer.upper() if optimizer == 'sgd' else 'Adam'}: DSQ trains "
                f"(test accuracy ≥ {TRAINED_ACCURACY})",
                accuracy >= TRAINED_ACCURACY,
                f"{accuracy:.4f}",
            )
        )
        gap = report["adjusted_vs_jitter"]
        main_q = report["runs"]["main"]["ours"]["quantized_weight_agreement"]["mean"]
        jitter_q = report["runs"]["jitter"]["ours"]["quantized_weight_agreement"]["mean"]
        claims.append(
            (
                f"{main} agrees with DSQ at least as well as DSQ at 1.01·η does, minus 1 point "
                f"(quantized weights, mean − 2 s.e. over {gap['n']} seed(s))",
                bool(gap["holds"]),
                f"{main_q:.4f} against {jitter_q:.4f}: {gap['mean']:+.2f} points, "
                f"margin {gap['margin']:+.2f}",
            )
        )
    return claims
