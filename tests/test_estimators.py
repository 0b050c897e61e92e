"""Estimators: one sympy definition → torch backward, α and M; checked against closed forms."""

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import quad
from strategies import examples

from qatcore import estimators as E
from qatcore.quantizers import levels, step_size, thresholds, uniform_quantize

REQUIRED = {"ste", "pwl", "dsq", "approx_sign", "swish_sign", "ewgs"}
IN_THEORY = ["ste", "pwl", "dsq", "swish_sign"]


def test_registry_has_the_required_names():
    assert REQUIRED <= set(E.names())
    for name in E.names():
        assert E.get(name).name == name


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown estimator name 'dsqq'.*allowed: .*dsq"):
        E.get("dsqq")


@pytest.mark.parametrize("name", ["dsq", "swish_sign"])
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "3", True])
def test_non_positive_sharpness_is_refused(name, bad):
    with pytest.raises(ValueError, match="sharpness must be a number > 0"):
        E.get(name, sharpness=bad)


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match="unknown parameter.*sharpnes.*allowed: sharpness"):
        E.get("dsq", sharpnes=3.0)
    with pytest.raises(ValueError, match="floor must be a number >= 0 and < 1"):
        E.get("pwl", floor=1.5)


@pytest.mark.parametrize("bad", [0, 17, 1.5, True])
def test_bad_bits_are_refused(bad):
    with pytest.raises(ValueError, match="bits must be an int from 1 to 16"):
        E.get("dsq").alpha(bad, 1.0)


def _reference_derivative(est, w, bits, m, grad_sign):
    """Q̂′ at each point, by substituting numbers into the sympy definition (no lambdify)."""
    delta = step_size(bits, m)
    params = est.parameter_values(bits)
    expr = est.symbolic_derivative
    out = []
    for wi, gi in zip(w.tolist(), grad_sign.tolist(), strict=True):
        if abs(wi) > m:
            out.append(0.0)
            continue
        index = min(max(math.floor((wi + m) / delta), 0), 2**bits - 2)
        centre = -m + (index + 0.5) * delta
        subs = {E.u: wi - centre, E.DELTA: delta, E.M_RANGE: m, E.GRAD_SIGN: gi}
        subs.update({p.symbol: params[p.name] for p in est.definition.parameters})
        out.append(float(expr.subs(subs).evalf()))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_autograd_gradient_equals_the_closed_form_derivative(name, bits):
    gen = torch.Generator().manual_seed(bits)
    m = 0.3 + float(torch.rand(1, generator=gen))
    w = ((torch.rand(150, generator=gen, dtype=torch.float64) * 2 - 1) * 1.2 * m).requires_grad_()
    upstream = torch.randn(150, generator=gen, dtype=torch.float64)
    est = E.get(name)
    q = est.quantize(w, bits, m)
    assert torch.equal(q.detach(), uniform_quantize(w.detach(), bits, m))
    q.backward(upstream)
    expected = upstream * _reference_derivative(est, w.detach(), bits, m, torch.sign(upstream))
    assert torch.allclose(w.grad, expected, rtol=1e-9, atol=1e-12)


def test_ewgs_backward_depends_on_the_incoming_gradient_sign():
    est, bits, m = E.get("ewgs", scaling=0.5), 2, 1.0
    w = torch.tensor([-0.6, -0.1, 0.2, 0.5], dtype=torch.float64)
    grads = {}
    for s in (1.0, -1.0):
        x = w.clone().requires_grad_()
        est.quantize(x, bits, m).backward(torch.full_like(x, s))
        grads[s] = x.grad * s
    rounding_error = (w - uniform_quantize(w, bits, m)) / step_size(bits, m)
    assert torch.allclose(grads[1.0], 1 + 0.5 * rounding_error)
    assert torch.allclose(grads[-1.0], 1 - 0.5 * rounding_error)
    assert not torch.allclose(grads[1.0], grads[-1.0])


def _theory_estimator(data, name, bits):
    if name == "pwl":
        return E.get("pwl", floor=data.draw(st.floats(0.05, 0.99)))
    if name == "dsq":  # kΔ = 2·sharpness/(2^b - 1) from soft (0.5) to nearly a step (12)
        return E.get("dsq", sharpness=data.draw(st.floats(0.5, 12.0)) * (2**bits - 1) / 2)
    if name == "swish_sign":
        return E.get("swish_sign", sharpness=data.draw(st.floats(0.2, 2.2)))
    return E.get(name)


@pytest.mark.parametrize("name", IN_THEORY)
@examples(60)
@given(data=st.data(), bits=st.integers(1, 8), m=st.floats(0.05, 3.0))
def test_weight_map_keeps_every_quantized_value(name, data, bits, m):
    est = _theory_estimator(data, name, bits)
    ws = data.draw(st.lists(st.floats(-1.3, 1.3), min_size=1, max_size=40))
    w = torch.tensor(ws, dtype=torch.float64) * m
    delta = step_size(bits, m)
    # an exact rounding tie can fall either way in floating point: keep clear of the thresholds
    w = w[(w[:, None] - thresholds(bits, m)[None]).abs().min(dim=1).values > 1e-9 * delta]
    assert torch.equal(
        uniform_quantize(est.weight_map(w, bits, m), bits, m), uniform_quantize(w, bits, m)
    )


@pytest.mark.parametrize("name", IN_THEORY)
@examples(40)
@given(data=st.data(), bits=st.integers(1, 8), m=st.floats(0.05, 3.0))
def test_weight_map_is_monotone_and_fixes_levels_and_thresholds(name, data, bits, m):
    est = _theory_estimator(data, name, bits)
    w = torch.linspace(-1.2 * m, 1.2 * m, 2001, dtype=torch.float64)
    mapped = est.weight_map(w, bits, m)
    assert torch.all(torch.diff(mapped) > 0)
    fixed = torch.cat([levels(bits, m), thresholds(bits, m)])
    assert torch.allclose(
        est.weight_map(fixed, bits, m), fixed, rtol=0, atol=1e-9 * step_size(bits, m)
    )


@pytest.mark.parametrize("name", IN_THEORY)
def test_weight_map_slope_is_alpha_over_the_derivative(name):
    est, bits, m = E.get(name), 2, 0.8
    w = torch.linspace(-0.79, 0.79, 301, dtype=torch.float64)
    w = w[
        (w[:, None] - levels(bits, m)[None]).abs().min(dim=1).values > 1e-3
    ]  # M′ jumps at bin edges
    h = 1e-6
    slope = (est.weight_map(w + h, bits, m) - est.weight_map(w - h, bits, m)) / (2 * h)
    assert torch.allclose(slope, est.alpha(bits, m) / est.derivative(w, bits, m), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(REQUIRED))
@examples(25)
@given(data=st.data(), bits=st.integers(1, 8), m=st.floats(0.05, 3.0))
def test_derivative_integrates_to_delta_over_a_bin(name, data, bits, m):
    est = _theory_estimator(data, name, bits)
    assert est.definition.integrates_to_delta
    assert est.bin_integral(bits, m) == pytest.approx(step_size(bits, m), rel=1e-9)


def _reference_dsq(bits, m, k_cfg, x):
    """The DSQ closed forms of docs/sources.md: α = Δ/I and the within-bin part of M."""
    delta = 2 * m / (2**bits - 1)
    k = k_cfg / m
    s = 1 / np.tanh(k * delta / 2)
    integral = (k * delta + np.sinh(k * delta)) / (s * delta * k**2)
    alpha = delta / integral
    i = np.clip(np.floor((x + m) / delta), 0, 2**bits - 2)
    centre = -m + (i + 0.5) * delta
    uu = x - centre
    mapped = centre + alpha * (k * uu + np.sinh(k * uu) * np.cosh(k * uu)) / (s * delta * k**2)
    return alpha, np.where(np.abs(x) <= m, mapped, x)


@pytest.mark.parametrize(("bits", "k_cfg"), [(1, 2.0), (2, 6.5), (4, 18.0), (3, 5.0), (8, 40.0)])
def test_dsq_alpha_and_map_equal_the_reference_closed_forms(bits, k_cfg):
    est, m = E.get("dsq", sharpness=k_cfg), 0.37
    x = np.linspace(-1.1 * m, 1.1 * m, 997)
    alpha, mapped = _reference_dsq(bits, m, k_cfg, x)
    assert est.map_method == E.CLOSED_FORM
    assert est.alpha(bits, m) == pytest.approx(alpha, rel=1e-9, abs=1e-12)
    got = est.weight_map(torch.from_numpy(x), bits, m).numpy()
    np.testing.assert_allclose(got, mapped, rtol=0, atol=1e-9 * m)


def test_dsq_default_sharpness_follows_the_authors():
    est = E.get("dsq")
    assert [est.parameter_values(b)["sharpness"] for b in (1, 2, 4)] == [2.0, 6.5, 18.0]
    # other widths keep kΔ of the nearest tabulated width below
    assert est.parameter_values(3)["sharpness"] * 2 / 7 == pytest.approx(6.5 * 2 / 3)


def test_map_method_is_stated_and_quadrature_is_accurate():
    assert E.get("ste").map_method == E.CLOSED_FORM
    assert E.get("pwl").map_method == E.CLOSED_FORM
    swish = E.get("swish_sign", sharpness=1.5)
    assert swish.map_method == E.QUADRATURE
    bits, m = 3, 1.3
    delta = step_size(bits, m)
    slope = E.derive(swish.definition).derivative_numpy
    integral, _ = quad(lambda v: 1 / slope(v, delta, m, 1.5), -delta / 2, delta / 2, epsabs=1e-14)
    assert swish.alpha(bits, m) == pytest.approx(delta / integral, rel=1e-10)


def test_ste_map_is_the_identity_and_alpha_one():
    est = E.get("ste")
    w = torch.linspace(-2, 2, 101, dtype=torch.float64)
    assert est.alpha(3, 1.5) == pytest.approx(1.0)
    assert torch.allclose(est.weight_map(w, 3, 1.5), w)


def test_alpha_is_the_harmonic_mean_of_the_derivative():
    est, bits, m = E.get("pwl", floor=0.3), 2, 1.0
    delta = step_size(bits, m)
    u = np.linspace(-delta / 2, delta / 2, 200001)
    values = 0.3 + 2 * 0.7 * (1 - 2 * np.abs(u) / delta)
    assert est.alpha(bits, m) == pytest.approx(1 / np.mean(1 / values), rel=1e-4)


@pytest.mark.parametrize(
    ("name", "params", "reason"),
    [
        ("approx_sign", {}, "vanishes"),
        ("pwl", {"floor": 0.0}, "vanishes"),
        ("swish_sign", {"sharpness": 3.0}, "is negative"),
        ("ewgs", {}, "sign of the incoming gradient"),
    ],
)
def test_weight_map_is_refused_with_the_reason(name, params, reason):
    est = E.get(name, **params)
    for ask in (lambda: est.weight_map(torch.zeros(3), 2, 1.0), lambda: est.alpha(2, 1.0)):
        with pytest.raises(ValueError, match=f"no weight map for estimator '{name}'.*{reason}"):
            ask()


def test_a_readers_estimator_is_derived_from_its_expression(monkeypatch):
    from qatcore.estimators import registry

    # the registry is global: this test's estimator must not leak into other tests' names()
    monkeypatch.setattr(registry, "_DEFINITIONS", dict(registry._DEFINITIONS))
    cubic = E.Definition(
        "test_quadratic", "1 + 3(2u/Δ)² scaled", (1 + 3 * (2 * E.u / E.DELTA) ** 2) / 2
    )
    E.register(cubic)
    est = E.get("test_quadratic")
    assert est.map_method == E.CLOSED_FORM
    assert est.bin_integral(2, 1.0) == pytest.approx(step_size(2, 1.0))
    with pytest.raises(ValueError, match="already registered"):
        E.register(cubic)
    with pytest.raises(ValueError, match="unknown symbols"):
        E.register(E.Definition("test_bad", "uses x", sp.Symbol("x") * E.u))


@pytest.mark.parametrize("name", ["ste", "pwl", "dsq", "swish_sign", "approx_sign", "ewgs"])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_a_bound_estimator_is_cached_and_equals_the_general_derivation(name, bits):
    est, m = E.get(name), 0.7
    bound = est.bind(bits, m)
    assert est.bind(bits, m) is bound and est.bind(bits, 0.5) is not bound
    w = torch.linspace(-1.2 * m, 1.2 * m, 997, dtype=torch.float64)
    delta = step_size(bits, m)
    centre = -m + (torch.clamp(torch.floor((w + m) / delta), 0, 2**bits - 2) + 0.5) * delta
    derivation = E.derive(est.definition)
    params = [
        torch.tensor(v, dtype=torch.float64)
        for v in (delta, m, *est.parameter_values(bits).values())
    ]
    sigmas = [torch.ones_like(w), -torch.ones_like(w)] if est.depends_on_gradient_sign else [None]
    for sigma in sigmas:
        extra = [] if sigma is None else [sigma]
        general = torch.as_tensor(
            derivation.derivative_torch(w - centre, *params, *extra)
        ).expand_as(w)
        expected = torch.where(w.abs() <= m, general, torch.zeros_like(w))
        assert torch.allclose(bound.derivative(w, sigma), expected, rtol=1e-9, atol=1e-12)
        if sigma is None:
            assert np.allclose(
                bound.derivative_numpy(w.numpy()), expected.numpy(), rtol=1e-9, atol=1e-12
            )
    assert torch.equal(bound.quantize_values(w), uniform_quantize(w, bits, m))


@given(
    bits=st.integers(1, 8),
    m=st.floats(0.1, 4.0),
    values=st.lists(st.floats(-5, 5, allow_subnormal=False), min_size=1, max_size=40),
)
@examples(40)
def test_the_numpy_path_quantizes_and_differentiates_exactly_as_torch(bits, m, values):
    w = torch.tensor(values + [0.0, -0.0, m, -m, 2 * m], dtype=torch.float64)
    for name in ("ste", "dsq", "pwl"):
        bound = E.get(name).bind(bits, m)
        q = bound.quantize_values(w.numpy())
        assert np.array_equal(q, uniform_quantize(w, bits, m).numpy())
        assert np.array_equal(np.signbit(q), np.signbit(bound.quantize_values(w).numpy()))
    ste = E.get("ste").bind(bits, m).derivative_numpy(w.numpy())
    assert np.array_equal(ste, np.where(np.abs(w.numpy()) <= m, 1.0, 0.0))


def test_binding_checks_its_arguments_once_and_a_sign_dependent_estimator_asks_for_the_sign():
    with pytest.raises(ValueError, match="bits"):
        E.get("dsq").bind(0, 1.0)
    with pytest.raises(ValueError, match="grad_sign is required"):
        E.get("ewgs").bind(2, 1.0).derivative(torch.zeros(3))
    assert E.get("dsq").bind(2, 1.0).alpha == pytest.approx(E.get("dsq").alpha(2, 1.0))
