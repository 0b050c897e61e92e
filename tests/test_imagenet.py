"""The ImageNet ResNet experiment, on a tiny synthetic folder: runs, sampling, resuming, DDP, CLI."""

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from qatcore import distributed, estimators
from qatcore.data.image_folder import write_synthetic_folder
from qatcore.estimators.imagenet import (
    ImageNetConfig,
    WeightSample,
    build_model,
    evaluation_share,
    load_config,
    run_imagenet,
)
from qatcore.estimators.layers import quantized_layers
from qatcore.optimizers import OptimizerConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    architecture="resnet18",
    width_multiplier=0.125,
    image_size=32,
    bits=2,
    optimizer=OptimizerConfig("sgd", lr=0.05),
    batch_size=6,
    epochs=2,
    recorded_weights=300,
    record_every=1,
    eval_examples=6,
    eval_batch_size=4,
    workers=0,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_folder(
        tmp_path_factory.mktemp("imagenet"), classes=3, train_per_class=4, val_per_class=2
    )


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    config = ImageNetConfig(data_dir=str(data_dir), out=str(tmp_path_factory.mktemp("out")), **TINY)
    return config, run_imagenet(config, progress=False)


def test_every_run_starts_from_one_initialisation_and_the_adjusted_one_from_its_map(tiny):
    config, result = tiny
    runs = result.runs
    assert set(runs) == {"custom", "adjusted", "ablation", "jitter"}
    steps = 2 * 2  # 12 images, batch 6, 2 epochs
    assert all(
        len(r.losses) == steps and r.weights.shape == (steps + 1, 300) for r in runs.values()
    )
    assert torch.equal(runs["custom"].weights[0], runs["jitter"].weights[0])
    assert torch.equal(runs["custom"].weights[0], runs["ablation"].weights[0])
    assert not torch.equal(runs["custom"].weights[0], runs["adjusted"].weights[0])
    assert torch.allclose(
        result.mapped_custom()[0], runs["adjusted"].weights[0].double(), atol=1e-6
    )
    assert torch.equal(result.levels("custom")[0], result.levels("adjusted")[0])
    assert result.alpha == pytest.approx(estimators.get("dsq").alpha(2, 1.0))
    assert not torch.equal(runs["custom"].weights[-1], runs["custom"].weights[0])  # it trained


def test_the_summary_holds_every_pair_and_the_run_settings(tiny):
    config, result = tiny
    summary = json.loads((Path(config.out) / "summary.json").read_text())
    assert set(summary["pairs"]) == {"adjusted", "ablation", "jitter"}
    assert (
        summary["architecture"] == "resnet18"
        and summary["steps"] == 4
        and summary["processes"] == 1
    )
    assert summary["recorded_weights"] == 300 and summary["eval_examples"] == 6
    for metrics in summary["pairs"].values():
        assert (
            0 <= metrics["quantized_weight_agreement"] <= 1
            and 0 <= metrics["prediction_agreement"] <= 1
        )
    assert summary["quantized_weight_agreement"] == round(
        result.agreements["adjusted"].quantized_weight_agreement, 6
    )
    assert summary["config"] == json.loads(json.dumps(asdict(config)))


def test_the_weight_sample_reads_the_chosen_coordinates_of_every_layer():
    model = build_model(ImageNetConfig(data_dir=".", **TINY), "ste", 3)
    sample = WeightSample(model, 500, seed=3)
    flat = torch.cat(
        [layer.weight.detach().reshape(-1) for layer in quantized_layers(model).values()]
    )
    chosen = (
        torch.randperm(len(flat), generator=torch.Generator().manual_seed(3))[:500].sort().values
    )
    assert torch.equal(sample.take(model), flat[chosen])
    ms = torch.cat(
        [
            torch.full((layer.weight.numel(),), layer.m, dtype=torch.float64)
            for layer in quantized_layers(model).values()
        ]
    )
    assert torch.equal(sample.m, ms[chosen])
    assert sum(s.stop - s.start for s in sample.slices.values()) == 500


def test_a_stopped_experiment_continues_to_the_uninterrupted_result(tiny, tmp_path):
    config, result = tiny
    resumed = replace(config, out=str(tmp_path))
    assert run_imagenet(resumed, progress=False, stop_after_epochs=1) is None
    first_half = torch.load(tmp_path / "runs" / "custom.pt", weights_only=True)
    assert (
        first_half["epoch"] == 1 and not first_half["finished"] and len(first_half["losses"]) == 2
    )
    again = run_imagenet(resumed, progress=False)
    for name, run in result.runs.items():
        assert torch.equal(again.runs[name].weights, run.weights), name
        assert again.runs[name].losses == run.losses
        assert torch.equal(again.runs[name].test_logits, run.test_logits)
    with pytest.raises(ValueError, match="run of other settings"):
        run_imagenet(replace(resumed, optimizer=OptimizerConfig("sgd", lr=0.06)), progress=False)
    with pytest.raises(ValueError, match="stop_after_epochs"):
        run_imagenet(resumed, progress=False, stop_after_epochs=0)


def test_configs_are_read_from_toml_with_named_errors(tmp_path):
    shipped = {p.name: load_config(p) for p in sorted((ROOT / "configs").glob("imagenet_*.toml"))}
    assert set(shipped) == {"imagenet_resnet50_dsq_sgd.toml", "imagenet_resnet50_dsq_adam.toml"}
    sgd, adam = (
        shipped["imagenet_resnet50_dsq_sgd.toml"],
        shipped["imagenet_resnet50_dsq_adam.toml"],
    )
    assert (sgd.optimizer.name, adam.optimizer.name, sgd.architecture, sgd.batch_size) == (
        "sgd",
        "adam",
        "resnet50",
        256,
    )
    assert (sgd.optimizer.lr, sgd.optimizer.momentum, adam.optimizer.lr, adam.optimizer.beta2) == (
        0.1,
        0.9,
        1e-3,
        0.95,
    )
    with_rate = load_config(
        ROOT / "configs" / "imagenet_resnet50_dsq_sgd.toml", optimizer="adam", lr=0.5
    )
    assert (
        with_rate.optimizer.name,
        with_rate.optimizer.lr,
        with_rate.optimizer.warmup_fraction,
    ) == ("adam", 0.5, 0.02)
    assert (
        load_config(ROOT / "configs" / "imagenet_resnet50_dsq_sgd.toml", data_dir="/x").data_dir
        == "/x"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('data_dir = "d"\nlearning_rate = 0.1\n')
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['learning_rate'\]"):
        load_config(bad)
    bad.write_text("bits = 2\n")
    with pytest.raises(ValueError, match="data_dir is not set"):
        load_config(bad)
    for field, value in (
        ("architecture", "vgg"),
        ("optimizer", "rmsprop"),
        ("batch_size", 0),
        ("estimator", "x"),
    ):
        with pytest.raises(ValueError, match=field if field != "estimator" else "estimator"):
            ImageNetConfig(data_dir="d", **{field: value})


def test_a_batch_larger_than_the_data_is_refused(data_dir, tmp_path):
    config = ImageNetConfig(data_dir=str(data_dir), out=str(tmp_path), **{**TINY, "batch_size": 64})
    with pytest.raises(ValueError, match="make no global batch of 64"):
        run_imagenet(config, progress=False)


@pytest.mark.distributed
def test_the_command_line_trains_on_two_gloo_processes(tiny, tmp_path):
    config, result = tiny
    toml = tmp_path / "tiny.toml"
    settings = {k: v for k, v in TINY.items() if k != "optimizer"} | {"data_dir": config.data_dir}
    table = asdict(TINY["optimizer"])  # the [optimizer] table
    toml.write_text(
        "\n".join(
            [
                *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
                "[optimizer]",
                *(
                    f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None
                ),  # TOML has no null
            ]
        )
        + "\n"
    )
    env = {
        **os.environ,
        "QATCORE_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }  # gloo
    command = [
        sys.executable,
        "-m",
        "qatcore",
        "imagenet",
        "--config",
        str(toml),
        "--out",
        str(tmp_path / "out"),
        "--nproc",
        "2",
        "--json",
    ]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    assert printed["pairs"].keys() == summary["pairs"].keys()
    two = torch.load(tmp_path / "out" / "runs" / "adjusted.pt", weights_only=True)
    assert torch.equal(two["weights"][0], result.runs["adjusted"].weights[0])  # the same M(w₀)
    assert two["logits"].shape == (6, 3)  # both processes' halves of the evaluation, gathered
    # each process normalises its own half-batch, so the paths part after the first step (the
    # same-weights-as-one-process test is test_distributed's, on a model without batch norm)
    assert not torch.equal(two["weights"][-1], two["weights"][0])
    assert all(torch.isfinite(torch.tensor(two["losses"])))


def test_the_command_line_names_a_bad_config(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('data_dir = "d"\nepochs = "many"\n')
    run = subprocess.run(
        [sys.executable, "-m", "qatcore", "imagenet", "--config", str(toml)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "epochs" in run.stderr


def test_devices_and_shares_of_the_batch():
    assert distributed.local_device("cpu") == torch.device("cpu")
    assert distributed.local_device("auto") == (
        torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            distributed.local_device("cuda")
    assert distributed.local_batch_size(12, 4) == 3
    with pytest.raises(ValueError, match="multiple of the 5 processes"):
        distributed.local_batch_size(12, 5)
    rows = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(distributed.gather_shards(rows, 4), rows[:4])


def test_evaluation_shares_cover_the_images_once_in_gather_order():
    for n, world in ((6, 2), (5, 2), (7, 3), (1, 2), (2, 4)):
        images = list(range(100, 100 + n))
        shares = [evaluation_share(images, rank, world) for rank in range(world)]
        assert len({len(share) for share in shares}) == 1  # equal lengths for all_gather
        rows = torch.tensor(shares).T.flatten()  # gather_shards' interleaving
        assert rows[:n].tolist() == images
