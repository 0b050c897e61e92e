"""The numerical edge cases of the quantizers: NaN and inf never become 0, half precision is
quantized in float32 (or refused where it cannot hold the levels), ranges below float32's normal
numbers are refused, and ``sign`` means one thing everywhere (a NaN gives its sign bit)."""

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

from qatcore import quantizers as Q
from qatcore.bnn import functions as F

FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


def _nan(sign_bit: int) -> float:
    return struct.unpack(">f", struct.pack(">I", (sign_bit << 31) | 0x7FC00000))[0]


@examples(100)
@given(st.lists(FLOAT32, min_size=1, max_size=40))
def test_sign_is_the_same_function_in_quantizers_and_bnn(values):
    x = torch.tensor(values, dtype=torch.float32)
    both = torch.stack([Q.sign(x), F.sign(x)])
    assert torch.equal(both[0], both[1])
    assert set(both.flatten().tolist()) <= {-1.0, 1.0}


def test_sign_of_nan_is_its_sign_bit_and_of_zero_plus_one():
    x = torch.tensor([_nan(0), _nan(1), 0.0, -0.0, -math.inf, math.inf])
    expected = [1.0, -1.0, 1.0, 1.0, -1.0, 1.0]
    assert Q.sign(x).tolist() == expected and F.sign(x).tolist() == expected


@examples(100)
@given(st.lists(FLOAT32, min_size=1, max_size=40))
def test_po2_quantize_lets_nan_and_inf_through_and_scales_the_rest(values):
    x = torch.tensor(values, dtype=torch.float32)
    out = F.po2_quantize(x)
    finite = torch.isfinite(x)
    assert torch.equal(torch.isnan(out), torch.isnan(x))
    assert torch.equal(out[torch.isinf(x)], x[torch.isinf(x)])
    if finite.any():  # the finite entries as if the others were not there
        assert torch.equal(out[finite], F.po2_quantize(x[finite]))
    nonzero = finite & (x != 0)
    assert (out[nonzero] != 0).all() or x[finite].abs().max() > 0  # never all zeroed by a NaN


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_po2_quantize_of_one_nan_or_inf_keeps_the_others(bad):
    out = F.po2_quantize(torch.tensor([1.0, bad, -3.0]))
    assert (
        out[0] == 1.0
        and out[2] == -2.0
        and (math.isnan(out[1]) if math.isnan(bad) else out[1] == bad)
    )
    out = F.po2_quantize(torch.tensor([1.0, 2.0, -3.0]), top=abs(bad))  # a chunk's top
    assert out.tolist() == [1.0, 2.0, -2.0]


@pytest.mark.parametrize("top", [-1.0, "3", True])
def test_po2_quantize_refuses_a_negative_or_non_number_top(top):
    with pytest.raises(ValueError, match="top"):
        F.po2_quantize(torch.ones(3), top=top)


@examples(100)
@given(st.integers(1, 16), st.floats(1e-3, 10.0), st.lists(FLOAT32, min_size=1, max_size=30))
def test_uniform_quantize_keeps_nan_and_clips_inf(bits, m, values):
    x = torch.tensor(values + [math.inf, -math.inf], dtype=torch.float32)
    q = Q.uniform_quantize(x, bits, m)
    assert torch.equal(torch.isnan(q), torch.isnan(x))
    assert torch.isfinite(q[~torch.isnan(x)]).all()
    # ±inf take the end levels, as the largest finite weights beyond ±m do
    ends = Q.uniform_quantize(torch.tensor([3.0e38, -3.0e38]), bits, m)
    assert torch.equal(ends, Q.levels(bits, m, torch.float32)[[-1, 0]])
    assert (q[x == math.inf] == ends[0]).all() and (q[x == -math.inf] == ends[1]).all()
    # the bottom level is -m exactly; Δ·(2**bits − 1) − m rounds twice, so the top is m within 2 ulp
    m32 = torch.tensor(m, dtype=torch.float32)
    assert ends[1] == -m32
    assert abs(ends[0] - m32) <= 2 * torch.finfo(torch.float32).eps * m32


def test_the_top_level_is_m_only_to_float32_rounding():
    # found by the test above: at 2 bits and m = 0.001 the float32 top level is one ulp below m
    top = Q.uniform_quantize(torch.tensor([math.inf]), 2, 0.001)
    assert top.item() == Q.levels(2, 0.001, torch.float32)[-1].item() != torch.tensor(0.001).item()


@examples(100)
@given(
    st.integers(1, 11),
    st.floats(1e-2, 100.0),
    st.lists(st.floats(-200, 200), min_size=1, max_size=30),
)
def test_float16_input_is_quantized_in_float32_and_rounded_once(bits, m, values):
    x = torch.tensor(values, dtype=torch.float32).half()
    q = Q.uniform_quantize(x, bits, m)
    assert q.dtype == torch.float16 and torch.isfinite(q).all()
    reference = Q.uniform_quantize(x.float(), bits, m)
    assert torch.equal(q, reference.half())  # the float32 levels, rounded to float16 once
    step = Q.step_size(bits, m)
    assert (q.float() - reference).abs().max() <= step / 2


@pytest.mark.parametrize("dtype,limit", [(torch.float16, 11), (torch.bfloat16, 8)])
def test_half_precision_is_refused_at_widths_it_cannot_hold(dtype, limit):
    x = torch.tensor([1.0, -1.0, 0.5], dtype=dtype)
    assert torch.isfinite(Q.uniform_quantize(x, limit, 1.0)).all()
    with pytest.raises(ValueError, match=f"at most {limit} for"):
        Q.uniform_quantize(x, limit + 1, 1.0)
    with pytest.raises(ValueError, match="at most"):
        Q.uniform_quantize(x, 16, 1.0)  # +1.0 became inf before


@pytest.mark.parametrize("m", [1e-45, 1e-39, 5e-324, Q.MIN_RANGE / 2])
def test_a_range_below_float32_normal_numbers_is_refused(m):
    with pytest.raises(ValueError, match="smallest normal"):
        Q.uniform_quantize(torch.ones(3), 2, m)
    with pytest.raises(ValueError, match="smallest normal"):
        Q.levels(2, m)


@examples(100)
@given(
    st.integers(1, 16),
    st.floats(Q.MIN_RANGE, 1e-30),
    st.lists(st.floats(-1, 1), min_size=1, max_size=10),
)
def test_the_smallest_ranges_accepted_give_numbers(bits, m, values):
    q = Q.uniform_quantize(torch.tensor(values, dtype=torch.float32) * m, bits, m)
    assert torch.isfinite(q).all()


def test_numpy_arrays_keep_nan_through_the_simulation_path():
    q = Q.quantize_values(np.array([np.nan, 2.0, -np.inf]), 1.0, Q.step_size(2, 1.0))
    assert np.isnan(q[0]) and q[1] == 1.0 and q[2] == -1.0


# --- ace on a model whose work depends on its input ----------------------------------------------


class _Branchy(torch.nn.Module):
    input_shape = (1, 8)

    def __init__(self):
        super().__init__()
        self.small, self.big = torch.nn.Linear(8, 2), torch.nn.Linear(8, 64)

    def forward(self, x):
        return self.small(x) if x.sum() <= 0 else self.big(x)[:, :2]


class _Steady(_Branchy):
    def forward(self, x):
        return self.small(x) + self.big(x)[:, :2]


def test_ace_warns_when_a_second_input_takes_another_branch():
    import warnings

    from qatcore.cost import ace

    with pytest.warns(ace.InputDependentCountWarning, match="depend on its input"):
        report = ace.count(_Branchy(), torch.zeros(1, 8))
    assert report.method == "hooks"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ace.InputDependentCountWarning)
        ace.count(_Steady(), torch.zeros(1, 8))  # no branch: no warning
