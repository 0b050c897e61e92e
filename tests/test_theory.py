"""qatcore.estimators.theory on every registered estimator, including the refusals."""

import pytest
import sympy as sp

from qatcore import estimators as E
from qatcore.estimators import theory as T

IN_THEORY = ["ste", "pwl", "dsq", "swish_sign"]
CLOSED_FORM = ["ste", "pwl", "dsq"]


@pytest.mark.parametrize("name", IN_THEORY)
def test_assumptions_hold_for_the_estimators_of_the_theory(name):
    report = T.check_assumptions(E.get(name))
    assert report.holds, str(report)
    assert float(report.expressions["L_minus"]) > 0


@pytest.mark.parametrize(
    ("name", "params", "failing"),
    [
        ("approx_sign", {}, {"bounded below, L₋ > 0"}),
        ("pwl", {"floor": 0.0}, {"bounded below, L₋ > 0"}),
        ("swish_sign", {"sharpness": 3.0}, {"bounded below, L₋ > 0"}),
        ("ewgs", {}, {"one fixed Q̂′(w)", "Lipschitz", "symmetric about the threshold"}),
    ],
)
def test_failing_assumptions_are_named(name, params, failing):
    report = T.check_assumptions(E.get(name, **params))
    assert {v.name for v in report.failed} == failing
    with pytest.raises(ValueError, match=f"does not cover estimator '{name}'.*fails"):
        T.weight_map_derivation(E.get(name, **params))


@pytest.mark.parametrize("name", IN_THEORY)
def test_weight_map_derivation_verdicts(name):
    result = T.weight_map_derivation(E.get(name), bits=2, m=1.0)
    assert result.holds, str(result)
    names = {v.name for v in result.verdicts}
    assert {"M is monotone", "Q(M(w)) = Q(w)"} <= names
    if name in CLOSED_FORM:
        assert {
            "M′ = α/Q̂′",
            "M fixes the upper level c + Δ/2",
            "M fixes the lower level c − Δ/2",
        } <= names


def test_dsq_map_checks_are_symbolic_and_alpha_matches():
    result = T.weight_map_derivation(E.get("dsq"), bits=2, m=1.0)
    assert all(
        v.how == "symbolic"
        for v in result.verdicts
        if v.name.startswith("M fixes") or v.name == "M′ = α/Q̂′"
    )
    assert float(result.expressions["alpha_value"]) == pytest.approx(E.get("dsq").alpha(2, 1.0))


def test_is_zero_can_fail():
    verdict = T.is_zero(E.u**2 + 1, E.get("ste"), "u² + 1 = 0")
    assert not verdict.holds and verdict.how == "numeric"


def test_general_sgd_expansion():
    result = T.sgd_step_expansion()
    assert result.holds
    assert result.expressions["eta1"] == -T.alpha * T.g


@pytest.mark.slow  # the notebooks run the same derivation in the fast tier
@pytest.mark.parametrize("name", CLOSED_FORM)
def test_sgd_expansion_on_each_closed_form_map(name):
    result = T.sgd_step_expansion(E.get(name))
    assert result.holds, str(result)
    bound = result.expressions["bound_value"]
    assert bound.free_symbols <= {T.eta, T.g}
    size = float(bound.subs({T.eta: 1, T.g: 1}))
    assert size == 0 if name == "ste" else size > 0  # the STE's Q̂′ is flat: no remainder


def test_sgd_expansion_needs_a_closed_form_map():
    with pytest.raises(ValueError, match="no closed-form M"):
        T.sgd_step_expansion(E.get("swish_sign"))


def test_momentum_and_adam_arguments():
    assert T.momentum_argument().holds
    adam = T.adam_scale_invariance()
    assert adam.holds
    b1 = sp.Symbol("beta_1", positive=True)
    assert b1 in adam.expressions["update"].free_symbols


def dropped_alpha(q):
    """A broken derivation: the weight map without its factor α (M′ = 1/Q̂′)."""
    return 1 / q


def test_a_broken_derivation_fails_the_general_momentum_and_adam_checks():
    """Notebook 01's checks derive: drop α from M′ and the general SGD step, the momentum step and
    the Adam step (mapped) no longer match the STE's, so their verdicts fail."""
    general = T.sgd_step_expansion(map_derivative=dropped_alpha)
    momentum = T.momentum_argument(map_derivative=dropped_alpha)
    adam = T.adam_scale_invariance(map_derivative=dropped_alpha)
    assert not general.holds and not momentum.holds and not adam.holds
    assert [v.holds for v in momentum.verdicts[:2]] == [
        False,
        False,
    ]  # the two derived from the series
    assert general.expressions["eta1"] == -T.g  # the STE step with rate η, not αη


def test_adam_with_the_sgd_recipe_fails_its_check():
    """Adam needs no map: the SGD recipe's M′ = α/Q̂′ breaks the equality."""
    assert not T.adam_scale_invariance(map_derivative=T.theorem_map_derivative).holds
