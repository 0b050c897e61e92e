"""qatcore.optimizers: one optimizer and schedule config, the same names everywhere."""

import math

import pytest
import torch

from qatcore.checks import check_choice
from qatcore.optimizers import OPTIMIZERS, PRESETS, OptimizerConfig, learning_rate


def test_sgd_is_pytorchs_heavy_ball_and_momentum_zero_is_plain_sgd():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = OptimizerConfig("sgd", lr=0.1).build([w])
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    for grad, expected in (
        ([1.0, 1.0], [0.9, -2.1]),
        ([1.0, 1.0], [0.71, -2.29]),
    ):  # b = 1, then 0.9 + 1
        w.grad = torch.tensor(grad)
        opt.step()
        torch.testing.assert_close(w.detach(), torch.tensor(expected))
    plain = OptimizerConfig("sgd", lr=0.1, momentum=0.0)
    assert plain.label == "plain SGD" and OptimizerConfig().label == "SGD, momentum 0.9"
    assert plain.build([torch.zeros(1, requires_grad=True)]).param_groups[0]["momentum"] == 0.0


def test_adam_has_the_papers_second_moment_window():
    opt = OptimizerConfig("adam", lr=1e-3).build([torch.zeros(1, requires_grad=True)])
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert OptimizerConfig("adam").label == "Adam"


def test_the_schedule_warms_up_then_decays_to_zero():
    config = OptimizerConfig(lr=0.1, warmup_fraction=0.02)
    rates = [config.rate(t, 200) for t in range(200)]
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert rates == [learning_rate(t, 200, 0.1, 0.02) for t in range(200)]
    assert OptimizerConfig(lr=1.0, warmup_fraction=0.1, warmup_from_zero=True).rate(0, 100) == 0.0
    assert (
        math.isclose(config.scaled(0.5).lr, 0.05) and config.scaled(0.5).momentum == config.momentum
    )


def test_of_reads_a_name_a_table_or_a_config():
    assert OptimizerConfig.of("adam") == OptimizerConfig("adam")
    assert OptimizerConfig.of({"name": "sgd", "lr": 0.5, "momentum": 0.0}) == OptimizerConfig(
        "sgd", lr=0.5, momentum=0.0
    )
    config = OptimizerConfig("adam", lr=2e-4)
    assert OptimizerConfig.of(config) is config
    with pytest.raises(ValueError, match=r"unknown optimizer setting\(s\) \['learning_rate'\]"):
        OptimizerConfig.of({"name": "sgd", "learning_rate": 0.1})
    with pytest.raises(TypeError, match="optimizer must be an OptimizerConfig"):
        OptimizerConfig.of(3)


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"name": "rmsprop"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"beta2": 1.0}, "beta2"),
        ({"eps": -1.0}, "eps"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
    ],
)
def test_bad_settings_are_refused_by_name(changes, word):
    with pytest.raises(ValueError, match=word):
        OptimizerConfig(**changes)


def test_every_choice_check_reads_the_same():
    assert check_choice("optimizer", "sgd", OPTIMIZERS) == "sgd"
    with pytest.raises(
        ValueError, match=r"^optimizer must be one of \('sgd', 'adam'\), got 'bop'$"
    ):
        check_choice("optimizer", "bop", OPTIMIZERS)
    with pytest.raises(ValueError, match=r"float_bits must be one of \(16, 32\), got True"):
        check_choice("float_bits", True, (16, 32))  # a bool is not the int 1


def test_each_named_config_means_one_thing():
    """Paper 1's "adam" (β₂ 0.95, warm-up then cosine) and paper 3's "bnn_adam" (β₂ 0.999, the
    rate kept at 1e-3) are different names; "sgd" is momentum 0.9 in both papers; "bop" is Bop
    with γ 1e-2 beside paper 3's Adam. A name means its preset wherever a config is read."""
    assert PRESETS["adam"] == OptimizerConfig("adam", lr=1e-3, beta2=0.95, schedule="cosine")
    assert PRESETS["bnn_adam"] == OptimizerConfig("adam", lr=1e-3, beta2=0.999, schedule="constant")
    assert PRESETS["sgd"] == OptimizerConfig("sgd", lr=1e-3, momentum=0.9, schedule="cosine")
    assert PRESETS["bnn_sgd"] == OptimizerConfig("sgd", lr=1e-3, momentum=0.9, schedule="constant")
    assert PRESETS["bop"] == OptimizerConfig(
        "bop", lr=1e-3, beta2=0.999, gamma=1e-2, threshold=None, schedule="constant"
    )
    for name, config in PRESETS.items():
        assert OptimizerConfig.of(name) is config
    assert PRESETS["adam"].label == "Adam" and PRESETS["bnn_adam"].label == "Adam, β₂ 0.999"
    adam = PRESETS["bnn_adam"].build([torch.zeros(1, requires_grad=True)])
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)
    assert PRESETS["bnn_adam"].rate(0, 10) == PRESETS["bnn_adam"].rate(9, 10) == 1e-3
    assert PRESETS["adam"].rate(9, 10) < PRESETS["adam"].rate(5, 10)
    with pytest.raises(ValueError, match="bnn.optim.make_optimizer"):
        PRESETS["bop"].build([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="optimizer must be one of"):
        OptimizerConfig.of("lamb")
