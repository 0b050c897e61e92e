"""Runs trained as one stacked network follow the runs trained one by one.

In float64 a stacked run is its run alone to 1e-9 over a whole training: the only difference is
the order of float sums in a grouped convolution and a batched product. In float32 the runs agree
to float precision until a latent weight sits on a threshold; after that a level flips in one run
and not the other, as it does between two CPUs' kernels, so whole runs are compared by their
quantized levels and predictions.
"""

import json
from dataclasses import replace

import pytest
import torch
from helpers import run_cli
from torch import nn

from qatcore import data, runtime
from qatcore.estimators import ablations, trajectory
from qatcore.estimators import stacked as stacked_runs
from qatcore.estimators.equivalence import (
    EquivalenceConfig,
    RunCache,
    run_equivalence,
    run_experiments,
)
from qatcore.estimators.estimator import BoundEstimator
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.stacked import stacked_forward, train_stacked
from qatcore.estimators.train import TrainConfig, train
from qatcore.optimizers import OptimizerConfig


@pytest.fixture(scope="module")
def digits():
    return data.subset(data.load_digits(), train=256, test=100)


class _Float64(nn.Module):
    """The first layer of a float64 copy of the network: the float32 images in float64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


#: five runs that differ in everything a stacked step lets differ: estimator, bit width, start,
#: seed (so batches), optimizer, rate and the quantized weights' rate factor
RUNS = [
    ("dsq", 2, TrainConfig(OptimizerConfig("sgd", lr=0.02), 64, 2, seed=0)),
    ("ste", 2, TrainConfig(OptimizerConfig("sgd", lr=0.02), 64, 2, 0, quantized_lr_factor=0.8)),
    ("dsq", 1, TrainConfig(OptimizerConfig("sgd", lr=0.0202), 64, 2, seed=1)),
    ("ste", 3, TrainConfig(OptimizerConfig("adam", lr=1e-3), 64, 2, seed=2)),
    (
        "dsq",
        2,
        TrainConfig(OptimizerConfig("sgd", lr=0.03), 64, 2, seed=3),
    ),  # quantized with the first
]


def _models() -> list[MNISTCNN]:
    models = []
    for k, (estimator, bits, _) in enumerate(RUNS):
        torch.manual_seed(k)
        models.append(MNISTCNN(bits, estimator, image_size=8).double())
    return models


def test_a_stacked_run_is_its_run_trained_alone_in_float64(digits):
    records = train_stacked(_models(), digits, [config for *_, config in RUNS], progress=False)
    for model, (_, _, config), record in zip(_models(), RUNS, records, strict=True):
        steps = len(record.losses)
        alone = train(
            nn.Sequential(_Float64(), *model),
            digits,
            config,
            record_steps=range(steps + 1),
            progress=False,
            evaluate=False,
        )
        rows = [
            torch.cat([w.reshape(-1) for w in alone.snapshots[s].values()])
            for s in range(steps + 1)
        ]
        assert record.weights.dtype == torch.float64
        torch.testing.assert_close(record.weights, torch.stack(rows), rtol=0, atol=1e-9)
        torch.testing.assert_close(
            torch.tensor(record.losses), torch.tensor(alone.losses), rtol=1e-9, atol=0
        )
        assert len(record.epoch_logits) == config.epochs
        with torch.no_grad():
            logits = model(digits.x_test.double())
        torch.testing.assert_close(record.epoch_logits[-1], logits, rtol=0, atol=1e-9)
    # the records differ from run to run: each run trained on its own
    assert not any(torch.equal(records[0].weights, r.weights) for r in records[1:])


def test_the_stacked_forward_is_each_model_on_its_own_input(digits, monkeypatch):
    models = _models()
    x = torch.stack([digits.x_train[k * 10 : k * 10 + 10] for k in range(len(models))]).double()
    calls = []
    real = BoundEstimator.quantize
    monkeypatch.setattr(
        BoundEstimator, "quantize", lambda self, w: calls.append(self) or real(self, w)
    )
    out = stacked_forward(models, x)
    # one call per estimator and bit width for each quantized layer: 4 of them among the 5 runs
    assert len(calls) == 2 * 4
    monkeypatch.undo()
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x[k]), rtol=0, atol=1e-12)


def test_stacked_experiments_follow_the_runs_trained_one_by_one(digits):
    config = EquivalenceConfig(estimator="dsq", epochs=2)
    experiments = [
        (config, ("custom", "adjusted", "ablation", "jitter")),
        (replace(config, bits=1, seed=1), ("custom", "adjusted")),
    ]
    runtime.configure(seed=0)
    plain = run_experiments(experiments, digits, progress=False)
    stacked = run_experiments(experiments, digits, progress=False, stack_size=6)
    for one, other in zip(plain, stacked, strict=True):
        assert list(one.runs) == list(other.runs)
        for name, run in one.runs.items():
            twin = other.runs[name]
            # the first steps agree to float precision (a 1 % change of rate is 100× larger)
            torch.testing.assert_close(twin.weights[:3], run.weights[:3], rtol=0, atol=1e-6)
            torch.testing.assert_close(
                torch.tensor(twin.losses[:3]), torch.tensor(run.losses[:3]), rtol=1e-5, atol=0
            )
            levels = trajectory.quantized_weight_agreement(one.levels(name), other.levels(name))
            assert levels >= 0.999, (name, levels)
            assert abs(twin.test_accuracy - run.test_accuracy) <= 0.05
        assert set(one.agreements) == set(other.agreements)


def test_runs_are_stacked_by_their_steps_and_at_most_stack_size_at_once(digits, monkeypatch):
    calls = []
    real = stacked_runs.train_stacked

    def counting(models, data_, configs, progress=None, test_curves=True):
        calls.append(sorted({(c.batch_size, c.epochs) for c in configs}) + [len(models)])
        return real(models, data_, configs, progress, test_curves)

    monkeypatch.setattr(stacked_runs, "train_stacked", counting)
    config = EquivalenceConfig(estimator="dsq", epochs=1)
    pairs = ablations.run_named(config, data=digits, progress=False, stack_size=3)
    # SGD's runs at 1 epoch: main, jitter, no_warp share one custom run (4 runs), bits_1 and
    # bits_4 are two runs each: 8 runs in stacks of 3, 3 and 2; scaledown's pair takes 3 epochs
    assert sorted(calls) == [[(64, 1), 2], [(64, 1), 3], [(64, 1), 3], [(64, 3), 2]]
    assert list(pairs) == list(ablations.default_runs(config.optimizer))


def test_the_cache_keeps_runs_trained_one_by_one_and_gives_them_to_a_stacked_call(
    digits, monkeypatch
):
    cache = RunCache()
    config = EquivalenceConfig(estimator="dsq", epochs=1)
    run_experiments([(config, ("custom", "ablation"))], digits, False, cache, stack_size=4)
    assert len(cache) == 0  # stacked records equal their runs within float tolerance only
    (first,) = run_experiments([(config, ("custom", "ablation"))], digits, False, cache)
    assert len(cache) == 2
    monkeypatch.setattr(stacked_runs, "train_stacked", lambda *a, **k: pytest.fail("trained again"))
    (again,) = run_experiments(
        [(config, ("custom", "ablation"))], digits, False, cache, stack_size=4
    )
    assert cache.hits == 2
    assert all(again.runs[n] is first.runs[n] for n in first.runs)


def test_what_cannot_be_stacked_is_refused(digits):
    small, large = MNISTCNN(image_size=8), MNISTCNN(image_size=28)
    config = TrainConfig(OptimizerConfig("sgd"), 64, 1)
    with pytest.raises(ValueError, match="same shapes"):
        train_stacked([small, large], digits, [config, config])
    with pytest.raises(ValueError, match="share batch size and epochs"):
        train_stacked([small, MNISTCNN(image_size=8)], digits, [config, replace(config, epochs=2)])
    with pytest.raises(ValueError, match="2 configs"):
        train_stacked([small, MNISTCNN(image_size=8)], digits, [config])
    with pytest.raises(ValueError, match="one dtype"):
        train_stacked([small, MNISTCNN(image_size=8).double()], digits, [config, config])
    with pytest.raises(ValueError, match="does not stack"):
        train_stacked([nn.Sequential(nn.BatchNorm2d(1))], digits, [config])
    reflecting = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="zero padding"):
        train_stacked([reflecting], digits, [config])
    with pytest.raises(ValueError, match="nn.Sequential"):
        train_stacked([nn.Linear(2, 2)], digits, [config])
    with pytest.raises(ValueError, match="stack_size"):
        run_experiments([(EquivalenceConfig(epochs=1), ("custom",))], digits, stack_size=0)
    with pytest.raises(ValueError, match="choose one"):
        ablations.run_seeds(EquivalenceConfig(epochs=1), seeds=2, workers=2, stack_size=4)


def test_the_command_line_stacks_the_runs_when_asked(capsys):
    runtime.configure(seed=0)
    code, out, err = run_cli(capsys, "equivalence", "--epochs", "1", "--stack-size", "4", "--json")
    assert code == 0, err
    stacked = run_equivalence(EquivalenceConfig(epochs=1), progress=False, stack_size=4)
    assert json.loads(out) == json.loads(json.dumps(stacked.to_dict()))
    code, _, err = run_cli(capsys, "equivalence", "--epochs", "1", "--stack-size", "0")
    assert code == 2 and "stack_size" in err


def test_configure_keeps_float32_convolutions_and_products_in_float32_on_a_gpu():
    # TF32 (cuDNN's default for float32 convolutions on Ampere and later GPUs) rounds their inputs to
    # 10 mantissa bits: a stacked run and its run alone would no longer agree to float tolerance
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        runtime.configure(seed=0)
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
        # read as torch.export reads it: one setting for every cuDNN operator
        assert cudnn.conv.fp32_precision == cudnn.rnn.fp32_precision
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before
