"""Quantized layers, the paper's MNIST CNN and the deterministic training loop, on real data."""

import math

import numpy as np
import pytest
import torch
from idx_writer import write_folder

from qatcore import data, metrics, runtime
from qatcore.estimators.layers import QuantConv2d, QuantLinear, quantized_layers
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.train import TrainConfig, train
from qatcore.optimizers import OptimizerConfig, learning_rate
from qatcore.quantizers import he_uniform_range, uniform_quantize


@pytest.fixture(scope="module")
def digits():
    return data.subset(data.load_digits(), train=600, test=200)


def _model(seed=0, bits=2, estimator="dsq", image_size=8):
    runtime.seed_everything(seed)
    return MNISTCNN(bits=bits, estimator=estimator, image_size=image_size)


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    total, lr = 200, 0.1
    rates = [learning_rate(t, total, lr, 0.02) for t in range(total)]
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(a >= b for a, b in zip(rates[3:], rates[4:], strict=False))
    assert rates[-1] < 1e-4 * lr
    assert rates[4 + (total - 4) // 2] == pytest.approx(lr / 2, rel=1e-3)


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("epochs", 1.5), ("seed", -1), ("quantized_lr_factor", -2.0)],
)
def test_bad_config_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_the_optimizer_is_an_optimizer_config():
    with pytest.raises(TypeError, match="optimizer must be an OptimizerConfig"):
        TrainConfig(optimizer="adam")


def test_quantized_layers_use_the_paper_range_and_quantize_their_weights():
    conv = QuantConv2d(32, 64, 3, bits=2, estimator="dsq")
    assert conv.m == pytest.approx(he_uniform_range(32 * 9))
    assert conv.weight.abs().max() <= conv.m
    x = torch.randn(2, 32, 5, 5)
    expected = torch.nn.functional.conv2d(
        x, uniform_quantize(conv.weight.detach(), 2, conv.m), conv.bias
    )
    assert torch.allclose(conv(x), expected, atol=1e-6)
    lin = QuantLinear(6, 3, bits=1, estimator="ste", m=0.5)
    assert set(lin.weight_levels().unique().tolist()) <= {-0.5, 0.5}
    with pytest.raises(ValueError, match="unknown estimator name"):
        QuantLinear(6, 3, estimator="nope")


def test_weight_map_keeps_the_layer_quantized_weights():
    conv = QuantConv2d(1, 8, 3, bits=2, estimator="dsq")
    before = conv.weight_levels().clone()
    latent = conv.weight.detach().clone()
    conv.apply_weight_map()
    assert not torch.equal(conv.weight.detach(), latent)
    assert torch.equal(conv.weight_levels(), before)


@pytest.mark.parametrize(("size", "features"), [(8, 256), (28, 3136)])
def test_mnist_cnn_geometry(size, features):
    model = _model(image_size=size)
    assert model[7].in_features == features
    assert model(torch.zeros(3, 1, size, size)).shape == (3, 10)
    assert list(quantized_layers(model)) == ["0", "3"]


def test_two_runs_with_the_same_seed_give_bit_identical_weights(digits):
    config = TrainConfig(OptimizerConfig("sgd", lr=0.05), batch_size=100, epochs=2, seed=3)
    runs = []
    for _ in range(2):
        model = _model(seed=11)
        result = train(model, digits, config, progress=False)
        runs.append((model.state_dict(), result.losses))
    (a, loss_a), (b, loss_b) = runs
    assert loss_a == loss_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = _model(seed=11)
    train(
        other,
        digits,
        TrainConfig(OptimizerConfig("sgd", lr=0.05), batch_size=100, epochs=2, seed=4),
        progress=False,
    )
    assert not torch.equal(other.state_dict()["0.weight"], a["0.weight"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_on_digits_learns(digits, optimizer):
    lr = 0.05 if optimizer == "sgd" else 3e-3
    config = TrainConfig(OptimizerConfig(optimizer, lr=lr), batch_size=50, epochs=6)
    result = train(_model(), digits, config, progress=False)
    assert result.steps == 6 * 12
    assert np.mean(result.losses[-12:]) < 0.5 * np.mean(result.losses[:12])
    assert result.test_accuracy > 0.8


def test_training_without_evaluation_leaves_the_accuracies_unmeasured(digits):
    config = TrainConfig(OptimizerConfig(lr=0.05), batch_size=200, epochs=1)
    result = train(_model(), digits, config, progress=False, evaluate=False)
    assert (
        result.steps == 3 and math.isnan(result.train_accuracy) and math.isnan(result.test_accuracy)
    )


def test_trajectories_are_recorded_at_the_chosen_steps(digits):
    model = _model()
    config = TrainConfig(OptimizerConfig(lr=0.05), batch_size=200, epochs=2)
    result = train(model, digits, config, record_steps=[0, 1, 6], progress=False)
    assert sorted(result.snapshots) == [0, 1, 6]
    assert result.snapshots[0]["0"].shape == (32, 1, 3, 3)
    assert torch.equal(result.snapshots[6]["3"], model[3].weight.detach())
    assert not torch.equal(result.snapshots[0]["0"], result.snapshots[1]["0"])
    with pytest.raises(ValueError, match=r"record_steps must lie in \[0, 6\]"):
        train(_model(), digits, config, record_steps=[7], progress=False)


def test_learning_rate_factor_applies_to_quantized_weights_only(digits):
    model = _model(estimator="ste")
    config = TrainConfig(
        OptimizerConfig("sgd", lr=0.04, momentum=0.0, warmup_fraction=0.0),
        batch_size=600,
        epochs=1,
        quantized_lr_factor=0.25,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # one full-batch step: the batch order does not change the mean loss
    torch.nn.functional.cross_entropy(model(digits.x_train), digits.y_train).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    train(model, digits, config, progress=False)
    after = model.state_dict()
    lr = learning_rate(0, 1, 0.04, 0.0)
    assert torch.allclose(
        after["0.weight"], before["0.weight"] - 0.25 * lr * grads["0.weight"], atol=1e-6
    )
    assert torch.allclose(after["7.weight"], before["7.weight"] - lr * grads["7.weight"], atol=1e-6)


def test_training_runs_the_same_way_on_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        ("train", "images"): rng.integers(0, 256, size=(120, 28, 28), dtype=np.uint8),
        ("train", "labels"): rng.integers(0, 10, size=120).astype(np.uint8),
        ("test", "images"): rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8),
        ("test", "labels"): rng.integers(0, 10, size=40).astype(np.uint8),
    }
    folder = write_folder(tmp_path / "mnist", "gz", arrays)
    dataset = data.load("mnist", data_dir=folder)
    model = _model(image_size=28)
    result = train(
        model,
        dataset,
        TrainConfig(OptimizerConfig(lr=0.01), batch_size=40, epochs=2),
        record_steps=[6],
        progress=False,
    )
    assert result.steps == 6 and math.isfinite(result.losses[-1])
    assert 0.0 <= result.test_accuracy <= 1.0
    assert result.snapshots[6]["3"].shape == (64, 32, 3, 3)


def test_show_progress_follows_the_argument_then_the_environment(monkeypatch):
    assert runtime.show_progress(True) and not runtime.show_progress(False)
    assert not runtime.show_progress()  # under pytest: no bar
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setenv(runtime.PROGRESS_VARIABLE, "1")
    assert runtime.show_progress()
    monkeypatch.setenv(runtime.PROGRESS_VARIABLE, "0")
    assert not runtime.show_progress()


def test_accuracy_counts_arg_max_hits_in_batches_and_keeps_the_mode():
    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    x = torch.eye(3).repeat(5, 1)  # 15 one-hot rows, each predicting its own index
    y = torch.tensor([0, 1, 2] * 4 + [1, 1, 1])  # the last three: only the middle one is right
    model.train()
    assert metrics.accuracy(model, x, y, batch_size=4) == 13 / 15
    assert model.training
