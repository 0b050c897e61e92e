"""qatcore.estimators.quadratic: the numeric cross-check of "custom estimators are STEs in disguise"."""

import dataclasses

import numpy as np
import pytest
import torch

from qatcore import estimators as E
from qatcore.estimators import quadratic as Q
from qatcore.optimizers import OptimizerConfig
from qatcore.quantizers import levels, quantize_values, step_size, thresholds

SCALING = [(name, opt) for name in ("dsq", "pwl") for opt in (Q.PLAIN_SGD, Q.SGD_MOMENTUM)]


@pytest.fixture(scope="module")
def problem():
    return Q.QuadraticProblem(dim=16, bits=2, m=1.0, seed=0)


def test_problem_is_a_well_conditioned_quadratic_fixed_by_its_seed(problem):
    a = problem.matrix
    assert torch.equal(a, a.T)
    eigenvalues = torch.linalg.eigvalsh(a)
    assert eigenvalues.min() >= 0.5 - 1e-12 and eigenvalues.max() <= 2.0 + 1e-12
    again = Q.QuadraticProblem(dim=16, bits=2, m=1.0, seed=0)
    assert torch.equal(again.matrix, a) and torch.equal(again.target, problem.target)
    assert torch.equal(again.initial_weights(), problem.initial_weights())
    assert not torch.equal(Q.QuadraticProblem(seed=1).matrix, a)
    assert problem.initial_weights().abs().max() <= problem.m


def test_gradient_is_autograd_of_the_loss(problem):
    generator = torch.Generator().manual_seed(5)
    q = problem.quantize(
        2 * torch.rand(4, problem.dim, generator=generator, dtype=torch.float64) - 1
    )
    q.requires_grad_(True)
    problem.loss(q).sum().backward()
    torch.testing.assert_close(q.grad, problem.gradient(q.detach()), rtol=1e-13, atol=1e-14)
    assert problem.loss(problem.target) == 0


@pytest.mark.parametrize("name", ["ste", "pwl", "dsq", "ewgs"])  # swish_sign: sympy takes 7 s
def test_simulated_step_is_autograd_through_the_estimators_quantize(name):
    # weights on a grid across the whole range and past ±m, so every part of Q̂′ is exercised
    problem = Q.QuadraticProblem(dim=97, seed=3)
    w0 = torch.linspace(-1.2, 1.2, 97, dtype=torch.float64)
    est = E.get(name)
    eta = 1e-3
    w1 = Q.simulate(problem, est, eta, 1, Q.PLAIN_SGD, w0=w0)[1]
    w = w0.clone().requires_grad_(True)
    problem.loss(est.quantize(w, problem.bits, problem.m)).backward()
    torch.testing.assert_close((w0 - w1) / eta, w.grad, rtol=1e-9, atol=1e-12)
    assert w.grad[w0.abs() > problem.m].abs().max() == 0  # clipped weights get no gradient


@pytest.mark.parametrize(
    "optimizer", [*Q.RULES.values(), "sgd", "adam", OptimizerConfig("sgd", momentum=0.5)], ids=str
)
def test_simulate_matches_the_torch_optimizer_of_the_same_config(problem, optimizer):
    # the quadratic's rules are PyTorch's, so "sgd" means here what it means in training
    est, eta, steps = E.get("dsq"), 3e-3, 40
    trajectory = Q.simulate(problem, est, eta, steps, optimizer)
    w = problem.initial_weights().requires_grad_(True)
    opt = dataclasses.replace(OptimizerConfig.of(optimizer), lr=eta).build([w])
    expected = [w.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        problem.loss(est.quantize(w, problem.bits, problem.m)).backward()
        opt.step()
        expected.append(w.detach().clone())
    torch.testing.assert_close(trajectory, torch.stack(expected), rtol=1e-10, atol=1e-12)
    assert not torch.equal(trajectory[-1], trajectory[0])


def test_runs_are_deterministic(problem):
    a = Q.paired_runs(problem, "pwl", 1e-2, 50, Q.SGD_MOMENTUM)
    b = Q.paired_runs(Q.QuadraticProblem(dim=16, bits=2, m=1.0, seed=0), "pwl", 1e-2, 50, "sgd")
    assert (
        torch.equal(a.custom, b.custom) and torch.equal(a.ste, b.ste) and torch.equal(a.gap, b.gap)
    )
    assert a.custom.shape == (51, 16) and a.custom.dtype == torch.float64


def test_paired_run_pairs_as_the_theory_says(problem):
    est = E.get("dsq")
    run = Q.paired_runs(problem, est, 1e-2, 10)
    assert run.optimizer == Q.PLAIN_SGD and run.alpha == pytest.approx(est.alpha(2, 1.0))
    torch.testing.assert_close(run.ste[0], est.weight_map(problem.initial_weights(), 2, 1.0))
    expected = Q.simulate(problem, "ste", run.alpha * 1e-2, 10, Q.PLAIN_SGD, w0=run.ste[0])
    torch.testing.assert_close(run.ste, expected, rtol=0, atol=0)
    mapped = est.weight_map(run.custom, 2, 1.0)
    torch.testing.assert_close(run.gap, (mapped - run.ste).abs().amax(dim=1), rtol=0, atol=0)
    adam = Q.paired_runs(problem, est, 1e-2, 10, Q.ADAM)
    assert adam.alpha == 1.0 and torch.equal(adam.ste[0], problem.initial_weights())
    unadjusted = Q.paired_runs(problem, est, 1e-2, 10, Q.ADAM, adjusted=False)
    assert torch.equal(adam.gap, unadjusted.gap)


@pytest.mark.parametrize("optimizer", Q.RULES.values(), ids=str)
@pytest.mark.parametrize("name", ["dsq", "pwl"])
def test_both_pairs_at_once_are_the_two_paired_runs_bit_for_bit(problem, optimizer, name):
    both = Q.adjusted_and_unadjusted_runs(problem, name, 2e-2, 60, optimizer)
    for run, adjusted in zip(both, (True, False), strict=True):
        alone = Q.paired_runs(problem, name, 2e-2, 60, optimizer, adjusted=adjusted)
        for field in dataclasses.fields(Q.PairedRun):
            a, b = getattr(run, field.name), getattr(alone, field.name)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, field.name


@pytest.mark.parametrize("optimizer", Q.RULES.values(), ids=str)
def test_ste_paired_with_itself_has_no_gap(problem, optimizer):
    run = Q.paired_runs(problem, "ste", 1e-2, 100, optimizer)
    assert run.max_gap < 1e-12
    assert run.agreement == 1.0 and run.mean_agreement == 1.0


def test_safe_start_keeps_away_from_thresholds_and_levels(problem):
    w0 = Q.safe_start(problem, 0.1)
    marks = torch.cat([thresholds(2, 1.0), levels(2, 1.0)])
    assert (w0[:, None] - marks).abs().min() > 0.1
    assert torch.equal(w0, Q.safe_start(problem, 0.1))


@pytest.mark.parametrize(("name", "optimizer"), SCALING)
def test_one_step_gap_is_second_order(problem, name, optimizer):
    etas = Q.default_etas(optimizer)
    gaps = Q.one_step_gap(problem, name, etas, optimizer)
    assert Q.fit_slope(etas, gaps) == pytest.approx(2.0, abs=0.2)
    if optimizer.momentum:  # from rest the first momentum step is SGD's
        np.testing.assert_array_equal(gaps, Q.one_step_gap(problem, name, etas, Q.PLAIN_SGD))
        ten_steps = Q.one_step_gap(problem, name, etas, optimizer, steps=10)
        assert Q.fit_slope(etas, ten_steps) == pytest.approx(2.0, abs=0.2)


@pytest.mark.parametrize(("name", "optimizer"), SCALING)
def test_fixed_time_gap_is_first_order(problem, name, optimizer):
    etas = Q.default_etas(optimizer)
    assert np.ptp(np.log10(etas)) >= 1.0
    gaps = Q.fixed_time_gap(problem, name, etas, optimizer=optimizer)
    assert Q.fit_slope(etas, gaps) == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("name", ["dsq", "pwl"])
def test_the_remap_beats_the_plain_ste_for_sgd_and_adam_needs_none(problem, name):
    eta, steps = 1e-3, 1000
    adjusted = Q.paired_runs(problem, name, eta, steps, Q.PLAIN_SGD)
    plain = Q.paired_runs(problem, name, eta, steps, Q.PLAIN_SGD, adjusted=False)
    adam = Q.paired_runs(problem, name, eta, steps, Q.ADAM)
    assert adjusted.max_gap < 0.05 * plain.max_gap
    assert adjusted.mean_agreement > plain.mean_agreement
    assert adam.max_gap < 0.3 * plain.max_gap


def test_adam_is_invariant_to_a_constant_gradient_factor(problem):
    differences = Q.adam_scale_invariance(problem)
    assert differences["Adam"] < 1e-9
    assert differences["plain SGD"] > 0.1 and differences["SGD, momentum 0.9"] > 0.1


def test_a_name_means_what_it_means_in_training():
    assert OptimizerConfig.of("sgd") == Q.SGD_MOMENTUM and Q.SGD_MOMENTUM.momentum == 0.9
    assert (
        Q.PLAIN_SGD.label == "plain SGD"
        and Q.default_etas("sgd").tolist() == Q.default_etas(Q.SGD_MOMENTUM).tolist()
    )
    with pytest.raises(ValueError, match="no default η range"):
        Q.default_etas(OptimizerConfig("sgd", momentum=0.5))
    with pytest.raises(ValueError, match="no default time"):
        Q.fixed_time_gap(
            Q.QuadraticProblem(),
            "dsq",
            [1e-3, 1e-2],
            optimizer=OptimizerConfig("sgd", momentum=0.5),
        )


def test_fit_slope_recovers_a_power_law():
    x = np.array([1e-3, 3e-3, 1e-2, 3e-2])
    assert Q.fit_slope(x, 7 * x**1.5) == pytest.approx(1.5, abs=1e-12)


def test_estimators_outside_the_theory_can_train_but_not_pair(problem):
    assert Q.simulate(problem, "ewgs", 1e-2, 5).shape == (6, 16)
    with pytest.raises(ValueError, match="no weight map"):
        Q.paired_runs(problem, "ewgs", 1e-2, 5)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda p: Q.QuadraticProblem(dim=0), "dim"),
        (lambda p: Q.QuadraticProblem(dim=2.5), "dim"),
        (lambda p: Q.QuadraticProblem(bits=0), "bits"),
        (lambda p: Q.QuadraticProblem(m=-1.0), "m"),
        (lambda p: Q.QuadraticProblem(seed=-1), "seed"),
        (lambda p: Q.simulate(p, "dsq", 0.0, 5), "eta"),
        (lambda p: Q.simulate(p, "dsq", float("nan"), 5), "eta"),
        (lambda p: Q.simulate(p, "dsq", 1e-2, -1), "steps"),
        (lambda p: Q.simulate(p, "dsq", 1e-2, 5, "rmsprop"), "optimizer"),
        (lambda p: Q.simulate(p, "dsq", 1e-2, 5, w0=torch.zeros(3)), "w0"),
        (lambda p: Q.simulate(p, "nope", 1e-2, 5), "estimator"),
        (lambda p: Q.paired_runs(p, "dsq", 1e-2, 5, adjusted="yes"), "adjusted"),
        (lambda p: Q.one_step_gap(p, "dsq", [1e-3]), "etas"),
        (lambda p: Q.one_step_gap(p, "dsq", [1e-3, -1e-2]), "etas"),
        (lambda p: Q.one_step_gap(p, "dsq", [1e-3, 1e-2], Q.ADAM), "optimizer"),
        (lambda p: Q.one_step_gap(p, "dsq", [1e-3, 1e-2], steps=0), "steps"),
        (lambda p: Q.one_step_gap(p, "dsq", [1e-2, 1.0]), "reach"),
        (lambda p: Q.fixed_time_gap(p, "dsq", [1e-3, 1e-2], time=0), "time"),
        (lambda p: Q.safe_start(p, 0.5), "reach"),
        (lambda p: Q.fit_slope([1, 2], [1, 2, 3]), "x and y"),
        (lambda p: Q.fit_slope([1, 2], [0, 1]), "x and y"),
        (lambda p: Q.adam_scale_invariance(p, -torch.ones(16)), "scale"),
        (lambda p: Q.adam_scale_invariance(p, eta=0), "eta"),
    ],
)
def test_bad_arguments_are_named(problem, call, argument):
    with pytest.raises(ValueError, match=argument):
        call(problem)


def test_derivative_variation_is_one_for_a_flat_estimator_and_above_for_dsq():
    problem = Q.QuadraticProblem(dim=16, bits=2, m=1.0, seed=0)
    flat = Q.derivative_variation(problem, "ste", 1e-2, 99, Q.ADAM, window=20)
    assert flat.shape[0] > 0 and np.all(flat == 1.0)
    dsq = Q.derivative_variation(problem, "dsq", 1e-2, 99, window=20)
    assert np.all(dsq >= 1.0) and dsq.max() > 1.0
    assert dsq.max() <= 20.0  # DSQ's Q̂′ varies at most L₊/L₋ ≈ 19.6 across half a bin


@pytest.mark.parametrize("optimizer", Q.RULES.values(), ids=str)
def test_a_run_trained_beside_others_is_the_run_trained_alone(problem, optimizer):
    # fixed_time_gap trains every η in one loop, a row each: each row must be its run alone, bit for bit
    etas, time = [1e-2, 2e-2, 5e-2], 0.6
    gaps = Q.fixed_time_gap(problem, "dsq", etas, time, optimizer)
    for eta, gap in zip(etas, gaps, strict=True):
        assert gap == Q.paired_runs(problem, "dsq", eta, round(time / eta), optimizer).max_gap


def _edge_weights(bits: int, m: float, dim: int) -> np.ndarray:
    """Rows of weights at and just past every level, threshold and ``±m``, at ``±0`` and outside."""
    marks = np.concatenate([levels(bits, m).numpy(), thresholds(bits, m).numpy(), [0.0, -0.0]])
    edges = np.concatenate([marks, np.nextafter(marks, 2 * m), np.nextafter(marks, -2 * m)])
    edges = np.concatenate([edges, [1.5 * m, -3 * m]])
    return np.resize(edges, (3, dim))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_the_step_quantizes_as_quantize_values_bit_for_bit(bits):
    problem = Q.QuadraticProblem(dim=16, bits=bits, m=0.7)
    w = _edge_weights(bits, 0.7, 16)
    quantized = Q._Quantized(problem, w.shape)
    expected = quantize_values(w, 0.7, step_size(bits, 0.7))
    assert quantized(w).tobytes() == expected.tobytes()
    assert np.array_equal(quantized.inside, np.abs(w) <= 0.7)


@pytest.mark.parametrize("optimizer", Q.RULES.values(), ids=str)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_fixed_slopes_train_as_the_estimators_slopes_bit_for_bit(bits, optimizer):
    # _FixedSlopes finds Q̂′ from the bins Q found; _estimator_slope asks derivative_numpy afresh
    problem = Q.QuadraticProblem(dim=16, bits=bits, m=0.7, seed=2)
    w0 = np.concatenate([_edge_weights(bits, 0.7, 16), problem.initial_weights().numpy()[None]])
    eta = np.array([[3e-2], [1e-1], [1e-2], [5e-2]])
    ste = E.get("ste")
    for name in ("pwl", "dsq", "approx_sign"):
        est = E.get(name)
        general = [Q._estimator_slope(problem, each) for each in (est, ste)]

        def by_rows(w, g, general=general):
            return np.concatenate([general[0](w[:2], g[:2]), general[1](w[2:], g[2:])])

        fixed = Q._slopes(problem, [(est, slice(0, 2)), (ste, slice(2, None))])
        assert isinstance(fixed, Q._FixedSlopes)
        expected = Q._train(problem, by_rows, eta, 40, optimizer, w0)
        assert Q._train(problem, fixed, eta, 40, optimizer, w0).tobytes() == expected.tobytes()
