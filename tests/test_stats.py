"""MeanSd against numpy's and statistics' definitions."""

import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

from qatcore.stats import MeanSd


@examples(100)
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=20))
def test_mean_and_sd_equal_the_sample_formulas(values):
    summary = MeanSd.of(values)
    assert math.isclose(summary.mean, statistics.fmean(values), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(summary.sd, float(np.std(values, ddof=1)), rel_tol=1e-6, abs_tol=1e-6)
    assert summary.lower() <= summary.mean <= summary.upper()
    assert math.isclose(
        summary.upper() - summary.lower(),
        4 * summary.sd / math.sqrt(len(values)),
        rel_tol=1e-9,
        abs_tol=1e-6,
    )


def test_one_value_has_no_spread_and_bad_input_is_named():
    assert MeanSd.of([0.5]) == MeanSd(0.5, 0.0, 1)
    assert str(MeanSd.of([1.0, 3.0])) == "2.00 ± 1.41 (sd, n = 2)"
    with pytest.raises(ValueError, match="at least one"):
        MeanSd.of([])
    with pytest.raises(ValueError, match="finite"):
        MeanSd.of([1.0, float("nan")])
