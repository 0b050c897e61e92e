"""The uniform b-bit weight quantizer and sign."""

import math

import pytest
import torch
from hypothesis import given
from strategies import examples, quantizer_inputs

from qatcore import quantizers as Q


@pytest.mark.parametrize("bits", range(1, 17))
def test_levels_are_2_to_the_bits_evenly_spaced_none_at_zero(bits):
    m = 0.7
    lv = Q.levels(bits, m)
    assert len(lv) == 2**bits
    assert lv[0] == pytest.approx(-m) and lv[-1] == pytest.approx(m)
    assert torch.allclose(
        torch.diff(lv), torch.full((2**bits - 1,), Q.step_size(bits, m), dtype=torch.float64)
    )
    assert torch.all(lv.abs() > 1e-12)
    assert torch.allclose(lv, -lv.flip(0))


def test_thresholds_sit_half_way_between_levels():
    lv, th = Q.levels(3, 1.0), Q.thresholds(3, 1.0)
    assert torch.allclose(th, (lv[1:] + lv[:-1]) / 2)


@examples(200)
@given(**quantizer_inputs)
def test_quantize_lands_on_a_level_within_half_a_step(bits, m, ws):
    w = torch.tensor(ws, dtype=torch.float64)
    q = Q.uniform_quantize(w, bits, m)
    delta = Q.step_size(bits, m)
    index = (q + m) / delta
    assert torch.allclose(index, torch.round(index), atol=1e-6)
    assert torch.all((index > -1e-6) & (index < 2**bits - 1 + 1e-6))
    assert torch.all((q - torch.clamp(w, -m, m)).abs() <= delta / 2 * (1 + 1e-9))
    assert torch.allclose(Q.uniform_quantize(q, bits, m), q)


def test_paper_formula_at_two_bits():
    # m = 1, Δ = 2/3: levels -1, -1/3, 1/3, 1; thresholds -2/3, 0, 2/3
    w = torch.tensor([-5.0, -0.7, -0.6, -0.01, 0.01, 0.6, 0.7, 5.0], dtype=torch.float64)
    expected = torch.tensor([-1, -1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1, 1], dtype=torch.float64)
    assert torch.allclose(Q.uniform_quantize(w, 2, 1.0), expected)


def test_he_uniform_range_and_fan_in():
    assert Q.he_uniform_range(6) == pytest.approx(1.0)
    assert Q.fan_in(torch.empty(32, 3, 5, 5)) == 75
    assert Q.fan_in(torch.empty(10, 256)) == 256
    assert Q.he_uniform_range(Q.fan_in(torch.empty(64, 32, 3, 3))) == pytest.approx(
        math.sqrt(6 / 288)
    )


def test_sign_maps_zero_to_plus_one():
    assert torch.equal(
        Q.sign(torch.tensor([-2.0, -0.0, 0.0, 3.0])), torch.tensor([-1.0, 1.0, 1.0, 1.0])
    )


@pytest.mark.parametrize("bits", [0, 17, -1, 2.5, True, "2", None])
def test_bad_bits_are_refused_by_name(bits):
    with pytest.raises(ValueError, match="bits must be an int from 1 to 16"):
        Q.uniform_quantize(torch.zeros(3), bits, 1.0)


@pytest.mark.parametrize("m", [0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_range_is_refused_by_name(m):
    with pytest.raises(ValueError, match="m \\(the quantizer range\\)"):
        Q.uniform_quantize(torch.zeros(3), 2, m)


@pytest.mark.parametrize("fan", [0, -3, 2.0])
def test_bad_fan_in_is_refused(fan):
    with pytest.raises(ValueError, match="fan_in"):
        Q.he_uniform_range(fan)
