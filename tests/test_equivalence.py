"""The equivalence experiment runner and its CLI, on real (short) trainings of the MNIST CNN."""

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from qatcore import data, estimators, runtime
from qatcore.estimators.equivalence import (
    RUNS,
    EquivalenceConfig,
    RunCache,
    _train_recorded,
    loose_bound_share,
    run_equivalence,
)
from qatcore.estimators.layers import quantized_layers
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.train import TrainConfig, train
from qatcore.metrics import accuracy as model_accuracy
from qatcore.optimizers import OptimizerConfig


@pytest.fixture(scope="module")
def digits():
    return data.subset(data.load_digits(), train=256, test=100)


@pytest.fixture(scope="module")
def sgd_result(digits):
    runtime.configure(seed=0)
    return run_equivalence(EquivalenceConfig(estimator="dsq", epochs=2), digits, progress=False)


def test_all_runs_start_from_one_initialisation(sgd_result, digits):
    runs = sgd_result.runs
    assert set(runs) == set(RUNS)
    assert torch.equal(runs["custom"].weights[0], runs["jitter"].weights[0])
    assert torch.equal(runs["custom"].weights[0], runs["ablation"].weights[0])
    # the adjusted STE starts at M(w₀): different latent weights, the same quantized levels
    assert not torch.equal(runs["custom"].weights[0], runs["adjusted"].weights[0])
    assert torch.equal(sgd_result.levels("custom")[0], sgd_result.levels("adjusted")[0])
    assert torch.allclose(
        sgd_result.mapped_custom()[0], runs["adjusted"].weights[0].double(), atol=1e-6
    )
    steps = 2 * 4  # 256 examples, batch 64
    assert all(len(r.losses) == steps and r.weights.shape[0] == steps + 1 for r in runs.values())


def test_the_adjusted_run_really_is_the_theorem_s(sgd_result, digits):
    """Rebuild run (b) by hand — STE model, M(w₀), α on the quantized weights — and compare."""
    runtime.seed_everything(0)
    model = MNISTCNN(2, "dsq", 8)
    for layer in quantized_layers(model).values():
        layer.estimator = estimators.get("ste")
        layer.apply_weight_map("dsq")
    config = TrainConfig(
        OptimizerConfig(lr=0.02), batch_size=64, epochs=2, quantized_lr_factor=sgd_result.alpha
    )
    train(model, digits, config, progress=False)
    flat = torch.cat(
        [layer.weight.detach().reshape(-1) for layer in quantized_layers(model).values()]
    )
    assert torch.equal(flat, sgd_result.runs["adjusted"].weights[-1])


def test_a_recorded_run_holds_what_training_and_evaluating_the_model_give(digits):
    """Every step's weights, the losses, each epoch's test loss and accuracy, and the final test
    logits and accuracy: the numbers of training with snapshots and evaluating the model directly."""
    config = TrainConfig(OptimizerConfig(lr=0.02), batch_size=64, epochs=2)
    runtime.seed_everything(0)
    record = _train_recorded(MNISTCNN(2, "dsq", 8), digits, config, progress=False)
    runtime.seed_everything(0)
    model = MNISTCNN(2, "dsq", 8)
    epoch_logits = []

    def test_logits(mod):
        mod.eval()
        with torch.no_grad():
            logits = mod(digits.x_test)
        mod.train()
        return logits

    def on_step(step, mod):
        if step % 4 == 0:  # 256 examples, batch 64
            epoch_logits.append(test_logits(mod))

    result = train(model, digits, config, range(9), progress=False, on_step=on_step)
    assert record.losses == result.losses
    layers = quantized_layers(model)
    flat = [torch.cat([s[name].reshape(-1) for name in layers]) for s in result.snapshots.values()]
    assert torch.equal(record.weights, torch.stack(flat))
    assert torch.equal(record.test_logits, test_logits(model))
    assert (
        record.test_accuracy
        == result.test_accuracy
        == model_accuracy(model, digits.x_test, digits.y_test)
    )
    assert record.history.val_loss == [
        float(F.cross_entropy(logits, digits.y_test)) for logits in epoch_logits
    ]
    assert record.history.val_accuracy == [
        float((logits.argmax(dim=1) == digits.y_test).double().mean()) for logits in epoch_logits
    ]
    assert record.history.loss == [
        torch.tensor(result.losses[:4], dtype=torch.float64).mean().item(),
        torch.tensor(result.losses[4:], dtype=torch.float64).mean().item(),
    ]


def test_metrics_order_the_runs_as_the_theory_says(sgd_result):
    a = sgd_result.agreements
    assert a["adjusted"].quantized_weight_agreement > a["ablation"].quantized_weight_agreement
    assert a["adjusted"].alignment_error < a["ablation"].alignment_error
    summary = sgd_result.to_dict()
    assert summary["quantized_weight_agreement"] == round(
        a["adjusted"].quantized_weight_agreement, 6
    )
    assert summary["alpha"] == pytest.approx(0.454376, abs=1e-6)


def test_same_config_same_numbers(sgd_result, digits):
    runtime.configure(seed=0)
    again = run_equivalence(EquivalenceConfig(estimator="dsq", epochs=2), digits, progress=False)
    assert again.to_dict() == sgd_result.to_dict()


def test_adam_compares_the_plain_ste(digits):
    runtime.configure(seed=0)
    result = run_equivalence(
        EquivalenceConfig(estimator="pwl", optimizer="adam", epochs=1),
        digits,
        progress=False,
        runs=("custom", "adjusted"),
    )
    assert torch.equal(result.runs["custom"].weights[0], result.runs["adjusted"].weights[0])
    assert set(result.agreements) == {"adjusted"}
    assert result.to_dict()["jitter_agreement"] is None


@pytest.mark.parametrize("name", ["approx_sign", "ewgs"])
def test_out_of_class_estimators_are_refused_with_the_reason(name, digits):
    with pytest.raises(ValueError, match="no weight map"):
        run_equivalence(EquivalenceConfig(estimator=name, epochs=1), digits, progress=False)
    result = run_equivalence(
        EquivalenceConfig(estimator=name, epochs=1),
        digits,
        progress=False,
        runs=("custom", "ablation", "jitter"),
    )
    assert result.to_dict()["alpha"] is None and "ablation" in result.agreements


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"estimator": "nope"}, "estimator"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"dataset": "cifar"}, "dataset"),
    ],
)
def test_bad_config_is_refused(changes, word):
    with pytest.raises(ValueError, match=word):
        EquivalenceConfig(**changes)


def test_runs_must_include_custom(digits):
    with pytest.raises(ValueError, match="runs must include 'custom'"):
        run_equivalence(EquivalenceConfig(epochs=1), digits, runs=("adjusted",))


@pytest.mark.slow  # a whole training run through the CLI; test_cli covers the conventions fast
def test_cli_prints_one_json_object():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "qatcore",
            "equivalence",
            "--estimator",
            "dsq",
            "--bits",
            "2",
            "--optimizer",
            "sgd",
            "--epochs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    for key in (
        "quantized_weight_agreement",
        "alignment_error",
        "jitter_agreement",
        "ablation_agreement",
    ):
        assert 0 <= summary[key] <= 1 or key == "alignment_error"
    assert (
        summary["estimator"] == "dsq"
        and summary["pairs"]["adjusted"]["change_point_agreement"] <= 1
    )


def test_cli_reports_an_estimator_outside_the_theory():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "qatcore",
            "equivalence",
            "--estimator",
            "ewgs",
            "--epochs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert "no weight map for estimator 'ewgs'" in run.stderr


# --- the authors' named runs (qatcore.estimators.ablations) ------------------------------------


from qatcore.estimators import ablations  # noqa: E402
from qatcore.optimizers import learning_rate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_every_pair_carries_the_authors_metrics_by_name(sgd_result):
    assert set(sgd_result.authors) == set(RUNS) - {"custom"}
    for metrics in sgd_result.authors.values():
        assert {
            "exact_correct_sequences_proportion",
            "correct_sequences_proportion",
            "avg_logit_difference",
            "incorrect_inference_agreement_proportion",
            "val_accuracy_correlation",
            "total_q_oscillation",
            "total_i_oscillation",
            "average_oscillation_error",
        } <= set(metrics)
        assert 0 <= metrics["exact_correct_sequences_proportion"] <= 1
        assert metrics["total_q_oscillation"] >= 0 and metrics["total_i_oscillation"] >= 0
    history = sgd_result.runs["custom"].history
    assert (
        len(history.loss) == len(history.val_loss) == len(history.val_accuracy) == 2
    )  # one per epoch


def test_named_runs_apply_to_their_optimizer():
    assert ablations.default_runs("sgd") == (
        "main",
        "jitter",
        "no_warp",
        "scaledown",
        "bits_1",
        "bits_4",
    )
    assert ablations.default_runs("sgd", bits=4)[-2:] == ("bits_1", "bits_2")
    assert ablations.default_runs("adam", bits=4) == (
        "main",
        "jitter",
        "scaledown",
        "ablation_ours",
    )
    with pytest.raises(ValueError, match="bits_1, bits_2 and bits_4 apply to SGD only"):
        ablations.check_runs(("main", "bits_4"), "adam")
    with pytest.raises(ValueError, match="no_warp applies to SGD only"):
        ablations.check_runs(("main", "no_warp"), "adam")
    with pytest.raises(ValueError, match="ablation_ours applies to Adam only"):
        ablations.check_runs(("ablation_ours",), "sgd")
    with pytest.raises(ValueError, match="runs must be taken from"):
        ablations.check_runs(("main", "warp"), "sgd")


def test_scaledown_and_other_bits_are_their_own_pairs(digits):
    pairs = ablations.run_named(
        EquivalenceConfig(epochs=1), ("scaledown", "bits_4"), digits, progress=False
    )
    assert pairs["scaledown"]["lr"] == pytest.approx(0.1 * EquivalenceConfig().optimizer.lr)
    assert pairs["scaledown"]["epochs"] == 3 and pairs["bits_4"]["bits"] == 4
    assert pairs["bits_4"]["alpha"] != pairs["scaledown"]["alpha"]  # α depends on the bit width


def test_seeds_report_the_mean_and_sd_of_every_metric(digits):
    report = ablations.run_seeds(
        EquivalenceConfig(epochs=1), ("main", "jitter"), seeds=2, data=digits, progress=False
    )
    assert report["seeds"] == [0, 1]
    for name in ("main", "jitter"):
        values = [seed[name]["ours"]["quantized_weight_agreement"] for seed in report["per_seed"]]
        summary = report["runs"][name]["ours"]["quantized_weight_agreement"]
        assert summary["mean"] == pytest.approx(sum(values) / 2, abs=1e-6) and summary["n"] == 2
        assert set(report["runs"][name]["authors"]) >= {
            "exact_correct_sequences_proportion",
            "logit_mse",
        }
    claim = report["adjusted_vs_jitter"]
    assert claim["holds"] == (claim["lower"] >= claim["bar"])
    assert claim["margin"] == pytest.approx(claim["lower"] - claim["bar"], abs=1e-3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_paper_configs_hold_the_authors_settings(optimizer):
    config, runs, seeds = ablations.load_config(
        ROOT / f"configs/paper_mnist_{optimizer}.toml", data_dir="x"
    )
    assert (config.batch_size, config.epochs, config.bits, config.optimizer.warmup_from_zero) == (
        600,
        5,
        2,
        True,
    )
    assert config.optimizer.name == optimizer and config.dataset == "mnist"
    assert config.optimizer.lr == {"sgd": 1e-3, "adam": 1e-4}[optimizer]
    assert (
        config.optimizer.momentum == 0.9 and config.optimizer.beta2 == 0.95
    )  # the authors' (and our defaults)
    assert runs == ablations.default_runs(optimizer) and seeds == 1
    with pytest.raises(ValueError, match="unknown setting"):
        ablations.load_config(ROOT / f"configs/paper_mnist_{optimizer}.toml", momentum=0.5)


def test_the_authors_warm_up_starts_at_zero():
    assert learning_rate(0, 100, 1.0, 0.1, from_zero=True) == 0.0
    assert learning_rate(5, 100, 1.0, 0.1, from_zero=True) == 0.5
    assert learning_rate(0, 100, 1.0, 0.1) == 0.1


def test_cli_seeds_json_reports_the_named_runs():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "qatcore",
            "equivalence",
            "--runs",
            "main",
            "jitter",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert set(report["runs"]) == {"main", "jitter"} and report["seeds"] == [0, 1]
    assert "mean" in report["runs"]["main"]["authors"]["correct_sequences_proportion"]
    assert "margin" in report["adjusted_vs_jitter"]


def test_loose_bound_share_is_a_fraction_and_zero_for_the_ste(digits, sgd_result):
    assert (
        0 < loose_bound_share(sgd_result) < 1
    )  # DSQ at lr 0.02: the bound exceeds some steps, not all
    ste = run_equivalence(
        EquivalenceConfig(estimator="ste", epochs=1), digits, progress=False, runs=("custom",)
    )
    assert loose_bound_share(ste) == 0.0  # the STE's Q̂′ is flat: L = 0, no remainder


def _authors_table(main_q: float, jitter_q: float, accuracy: float, seeds: int = 1) -> dict:
    """A table as bench/equivalence_paper.py writes it, with one SGD experiment of ``seeds`` seeds."""
    per_seed = [
        {
            "main": {"ours": {"quantized_weight_agreement": main_q}},
            "jitter": {"ours": {"quantized_weight_agreement": jitter_q}},
        }
    ] * seeds

    def pair(q: float) -> dict:
        return {
            "bits": 2,
            "lr": 1e-3,
            "epochs": 5,
            "alpha": 0.454376,
            "test_accuracy": {
                who: {"mean": accuracy, "sd": 0.0, "n": seeds} for who in ("custom", "other")
            },
            "ours": {"quantized_weight_agreement": {"mean": q, "sd": 0.0, "n": seeds}},
            "authors": {"total_q_oscillation": {"mean": 12.0, "sd": 0.0, "n": seeds}},
        }

    report = {
        "estimator": "dsq",
        "optimizer": "sgd",
        "seeds": list(range(seeds)),
        "runs": {"main": pair(main_q), "jitter": pair(jitter_q)},
        "adjusted_vs_jitter": ablations.jitter_claim(per_seed),
    }
    return {"experiments": {"dsq-sgd": report}, "steps_per_epoch": 100}


def test_paper_claims_on_the_authors_table_hold_and_fail_by_their_numbers():
    near = ablations.paper_claims(_authors_table(0.995, 0.999, 0.8))
    assert [holds for _, holds, _ in near] == [True, True]  # 0.4 points below jitter: within 1
    assert "0.9950 against 0.9990" in near[1][2]
    far = ablations.paper_claims(_authors_table(0.985, 0.999, 0.1))
    assert [holds for _, holds, _ in far] == [False, False]  # chance accuracy; 1.4 points below
    assert far[0][0].startswith("SGD: DSQ trains") and far[1][0].startswith(
        "SGD: the STE from M(w₀)"
    )
    assert ablations.paper_claims({"experiments": {}}) == []


def test_the_authors_table_shows_every_run_and_labels_the_courses_pwl():
    text = ablations.format_table(_authors_table(0.995, 0.999, 0.8)["experiments"]["dsq-sgd"])
    lines = text.splitlines()
    assert lines[0] == "| | main | jitter |"
    assert "| lr, epochs, steps | 0.001, 5, 500 | 0.001, 5, 500 |" in lines
    assert "| ours: quantized_weight_agreement | 0.995 | 0.999 |" in lines
    assert "| theirs: total_q_oscillation | 12 | 12 |" in lines
    assert "| theirs: logit_mse | n/a | n/a |" in lines  # absent from the report
    assert "steps" not in ablations.format_table(
        _authors_table(0.995, 0.999, 0.8)["experiments"]["dsq-sgd"], steps_per_epoch=None
    )
    assert (
        "tent-shaped" in ablations.estimator_label("pwl")
        and ablations.estimator_label("dsq") == "dsq"
    )


def _bench_script(name: str):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _part(optimizer: str, cut: str, complete: bool = True) -> dict:
    table = _authors_table(0.995, 0.999, 0.8)
    report = {**table["experiments"]["dsq-sgd"], "optimizer": optimizer}
    return {
        "command": f"python bench/equivalence_paper.py --optimizers {optimizer} --out /tmp/{optimizer}",
        "machine": {"cpu": "test"},
        "dataset": "fashion-mnist",
        "batch_size": 600,
        "train_images": 60000,
        "test_images": 10000,
        "steps_per_epoch": 100,
        "cut": cut,
        "complete": complete,
        "seconds": {f"dsq-{optimizer}": 1.0},
        "experiments": {f"dsq-{optimizer}": report},
    }


def test_the_authors_table_combines_parts_that_ran_apart():
    script = _bench_script("equivalence_paper")
    # one process stopped after SGD (its cut 'nothing', as started), one that ran Adam alone
    table = script.combine([_part("sgd", "nothing", complete=False), _part("adam", "only adam")])
    assert table["cut"] == "nothing" and table["full"] and table["complete"]
    assert list(table["experiments"]) == ["dsq-sgd", "dsq-adam"]
    assert [c[0].split(":")[0] for c in table["claims"]] == ["SGD", "SGD", "Adam", "Adam"]
    assert "--out" not in table["command"] and "(stopped after dsq-sgd)" in table["command"]
    alone = script.combine([_part("adam", "only adam")])
    assert alone["cut"] == "only adam" and not alone["full"]
    other = _part("adam", "only adam")
    other["test_images"] = 1000
    with pytest.raises(SystemExit, match="test_images"):
        script.combine([_part("sgd", "only sgd"), other])
    with pytest.raises(SystemExit, match="repeat"):
        script.combine([_part("sgd", "only sgd"), _part("sgd", "only sgd")])


def test_a_run_cache_reuses_runs_bit_for_bit(digits):
    """A run two experiments share (the plain STE of SGD) is trained once, and every record and
    metric is the one an uncached run gives, bit for bit."""
    from qatcore.estimators.equivalence import RunCache

    cache = RunCache()
    config = EquivalenceConfig(estimator="dsq", epochs=1)
    first = run_equivalence(config, digits, progress=False, cache=cache)
    assert len(cache) == 4 and cache.hits == 0
    second = run_equivalence(
        EquivalenceConfig(estimator="pwl", epochs=1), digits, progress=False, cache=cache
    )
    assert cache.hits == 1 and len(cache) == 7  # pwl's ablation is dsq's: the STE from w₀ at η
    assert second.runs["ablation"] is first.runs["ablation"]
    fresh = run_equivalence(EquivalenceConfig(estimator="pwl", epochs=1), digits, progress=False)
    for name, record in fresh.runs.items():
        assert torch.equal(record.weights, second.runs[name].weights)
        assert torch.equal(record.test_logits, second.runs[name].test_logits)
        assert record.losses == second.runs[name].losses
    assert fresh.agreements == second.agreements and fresh.authors == second.authors
    again = run_equivalence(config, digits, progress=False, cache=cache)
    assert cache.hits == 5 and again.agreements == first.agreements
    # a different rate, seed or bit width is another run
    run_equivalence(replace(config, seed=1), digits, progress=False, cache=cache, runs=("custom",))
    run_equivalence(replace(config, bits=3), digits, progress=False, cache=cache, runs=("custom",))
    assert cache.hits == 5 and len(cache) == 9


def test_levels_and_mapped_custom_are_computed_once_and_unchanged(sgd_result):
    from qatcore.estimators import trajectory

    weights = sgd_result.runs["custom"].weights.double()
    expected = trajectory.level_indices(weights, sgd_result.config.bits, sgd_result.m)
    assert torch.equal(sgd_result.levels("custom"), expected)
    assert sgd_result.levels("custom") is sgd_result.levels("custom")
    est = estimators.get("dsq")
    mapped = sgd_result.mapped_custom()
    assert mapped is sgd_result.mapped_custom()
    for sl in sgd_result.layer_slices.values():
        m = float(sgd_result.m[sl.start])
        assert torch.equal(mapped[:, sl], est.weight_map(weights[:, sl], 2, m))


def test_a_part_of_the_mapped_custom_run_is_that_part_of_the_whole(sgd_result):
    """The comparison maps the last step alone and the plot a few weights alone: bit for bit what
    mapping the whole trajectory gives there, from either layer, with or without the whole."""
    whole = sgd_result.mapped_custom()
    n = whole.shape[1]
    columns = torch.tensor([n - 1, 0, 5, n - 2, 17])  # both layers, out of order
    alone = replace(sgd_result, _memo={})
    for part, expected in (
        (alone.mapped_custom(steps=slice(-1, None)), whole[-1:]),
        (alone.mapped_custom(columns=columns), whole[:, columns]),
        (alone.mapped_custom(steps=slice(2, 4), columns=columns[:2]), whole[2:4, columns[:2]]),
        (sgd_result.mapped_custom(steps=slice(-1, None)), whole[-1:]),
        (alone.mapped_custom(columns=torch.tensor([0, 1])), whole[:, :2]),  # one layer only
        (sgd_result.mapped_custom(columns=torch.tensor([0, 1])), whole[:, :2]),
    ):
        assert part.dtype == torch.float64 and torch.equal(part, expected)
    assert not alone._memo  # the parts leave the whole uncomputed


def test_without_test_curves_every_number_but_the_two_curve_correlations_is_the_same(
    sgd_result, digits
):
    """``test_curves=False`` tests once, after the last step: the same runs bit for bit, the same
    metrics, and no per-epoch test curve for the authors' two correlations of it."""
    runtime.configure(seed=0)
    cache = RunCache()
    config = EquivalenceConfig(estimator="dsq", epochs=2)
    lean = run_equivalence(config, digits, progress=False, cache=cache, test_curves=False)
    for name, record in lean.runs.items():
        full = sgd_result.runs[name]
        assert torch.equal(record.weights, full.weights) and record.losses == full.losses
        assert torch.equal(record.test_logits, full.test_logits)
        assert record.test_accuracy == full.test_accuracy
        assert record.history.loss == full.history.loss
        assert record.history.val_loss == record.history.val_accuracy == []
    assert lean.agreements == sgd_result.agreements
    curves = {"val_loss_correlation", "val_accuracy_correlation"}
    assert set(lean.authors) == set(sgd_result.authors)
    for name, metrics in lean.authors.items():
        full = sgd_result.authors[name]
        assert all(math.isnan(metrics[k]) for k in curves)
        assert all(not math.isnan(full[k]) for k in curves)  # two epochs: curves of two points
        assert metrics.keys() == full.keys()
        assert all(
            metrics[k] == full[k] or math.isnan(metrics[k]) and math.isnan(full[k])
            for k in metrics.keys() - curves
        )
    # a record without the curves is not one with them: asked for with curves, it is trained
    run_equivalence(config, digits, progress=False, cache=cache, runs=("custom",))
    assert cache.hits == 0 and len(cache) == 5
