"""Agreement metrics between two training runs (qatcore.estimators.trajectory)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples, quantizer_inputs

from qatcore import quantizers as Q
from qatcore.estimators import trajectory as tr

# --- helpers: literal, loop-based readings of the definitions ----------------------------------


def change_points(column: list[int]) -> list[tuple[int, int]]:
    """(new level, step) at each step where the level changes."""
    return [(column[t], t) for t in range(1, len(column)) if column[t] != column[t - 1]]


def reference_change_point_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    same = [
        a[0, i] == b[0, i] and change_points(a[:, i].tolist()) == change_points(b[:, i].tolist())
        for i in range(a.shape[1])
    ]
    return sum(same) / len(same)


def collapsed_path(column: list[int]) -> list[int]:
    """Distinct consecutive levels, then drop each level equal to the one two places before it."""
    visited = [column[0]] + [column[t] for t in range(1, len(column)) if column[t] != column[t - 1]]
    return [x for j, x in enumerate(visited) if j < 2 or x != visited[j - 2]]


def reference_compressed_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    same = [
        collapsed_path(a[:, i].tolist()) == collapsed_path(b[:, i].tolist())
        for i in range(a.shape[1])
    ]
    return sum(same) / len(same)


def levels_tensor(columns: list[list[int]]) -> torch.Tensor:
    """T × N int8 levels from one list of levels per weight."""
    return torch.tensor(columns, dtype=torch.int8).T.contiguous()


level_trajectories = st.integers(1, 12).flatmap(
    lambda t: st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=t, max_size=t),
            st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=t, max_size=t),
        )
    )
)

# --- level indices ---------------------------------------------------------------------------


def test_level_indices_at_two_bits():
    # m = 1, Δ = 2/3: levels -1, -1/3, 1/3, 1; thresholds -2/3, 0, 2/3
    w = torch.tensor([-5.0, -0.7, -0.6, -0.01, 0.01, 0.6, 0.7, 5.0], dtype=torch.float64)
    k = tr.level_indices(w, 2, 1.0)
    assert k.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert k.dtype == torch.int8


@pytest.mark.parametrize(
    ("bits", "dtype"),
    [(1, torch.int8), (7, torch.int8), (8, torch.int16), (15, torch.int16), (16, torch.int32)],
)
def test_level_index_dtype_holds_every_level(bits, dtype):
    k = tr.level_indices(torch.tensor([-2.0, 2.0]), bits, 1.0)
    assert k.dtype == dtype
    assert k.tolist() == [0, 2**bits - 1]


@examples(100)
@given(**quantizer_inputs)
def test_level_indices_match_uniform_quantize(bits, m, ws):
    w = torch.tensor(ws, dtype=torch.float64)
    k = tr.level_indices(w, bits, m)
    assert torch.all((k >= 0) & (k <= 2**bits - 1))
    q = -m + k.double() * Q.step_size(bits, m)
    assert torch.allclose(q, Q.uniform_quantize(w, bits, m), rtol=0, atol=1e-9 * m)


def test_level_indices_of_a_trajectory_keep_its_shape():
    w = torch.linspace(-1, 1, 12, dtype=torch.float32).reshape(3, 4)
    k = tr.level_indices(w, 3, 0.8)
    assert k.shape == (3, 4)
    assert torch.equal(k.reshape(-1), tr.level_indices(w.reshape(-1), 3, 0.8))


def test_level_indices_with_a_range_per_column_equal_per_layer_calls():
    torch.manual_seed(0)
    w1, w2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    m = torch.tensor([0.5] * 3 + [1.5] * 4, dtype=torch.float64)
    k = tr.level_indices(torch.cat([w1, w2], dim=1), 2, m)
    assert torch.equal(
        k, torch.cat([tr.level_indices(w1, 2, 0.5), tr.level_indices(w2, 2, 1.5)], 1)
    )


# --- quantized-weight agreement --------------------------------------------------------------


def test_quantized_weight_agreement_counts_equal_levels():
    a = torch.tensor([0, 1, 2, 3], dtype=torch.int8)
    b = torch.tensor([0, 1, 3, 3], dtype=torch.int8)
    assert tr.quantized_weight_agreement(a, b) == 0.75


def test_agreement_over_training_per_step():
    a = torch.tensor([[0, 1], [1, 1], [2, 2]], dtype=torch.int8)
    b = torch.tensor([[0, 1], [0, 1], [3, 0]], dtype=torch.int8)
    assert tr.agreement_over_training(a, b).tolist() == [1.0, 0.5, 0.0]
    assert tr.quantized_weight_agreement(a, b) == pytest.approx(0.5)


# --- alignment error -------------------------------------------------------------------------


def test_path_length_sums_moves_over_steps_and_weights_in_units_of_m():
    w = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, -1.0]], dtype=torch.float64)
    assert tr.path_length(w, 0.5) == pytest.approx(3.0)
    assert tr.path_length(w, torch.tensor([0.5, 1.0], dtype=torch.float64)) == pytest.approx(2.0)
    assert tr.path_length(w[:1], 0.5) == 0.0


def test_alignment_error_is_final_distance_over_ste_path_length():
    ste = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, -1.0]], dtype=torch.float64)
    mapped = ste.clone()
    mapped[-1, 0] += 0.1
    mapped[0, 1] += 7.0  # earlier rows do not enter
    assert tr.weight_alignment_error(mapped, ste, 0.5) == pytest.approx((0.1 / 0.5) / 3.0)
    m = torch.tensor([0.5, 1.0], dtype=torch.float64)
    assert tr.weight_alignment_error(mapped, ste, m) == pytest.approx((0.1 / 0.5) / 2.0)


def test_alignment_error_when_the_ste_run_did_not_move():
    still = torch.zeros(4, 3, dtype=torch.float64)
    assert tr.weight_alignment_error(still, still, 1.0) == 0.0
    assert tr.weight_alignment_error(still + 0.1, still, 1.0) == math.inf


@examples(100)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    m=st.floats(1e-2, 5.0),
)
def test_alignment_error_of_identical_runs_is_zero(rows, cols, seed, m):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert tr.weight_alignment_error(w, w.clone(), m) == 0.0
    assert tr.path_length(w, m) >= 0.0


# --- change points ---------------------------------------------------------------------------


def test_change_point_agreement_two_weights_known_answer():
    # weight 0 goes 1 → 2 at step 3 in both runs; weight 1 at step 2 in a, at step 4 in b
    a = levels_tensor([[1, 1, 1, 2, 2, 2], [0, 0, 1, 1, 1, 1]])
    b = levels_tensor([[1, 1, 1, 2, 2, 2], [0, 0, 0, 0, 1, 1]])
    assert tr.change_point_agreement(a, b) == 0.5
    assert tr.compressed_change_point_agreement(a, b) == 1.0  # same levels, steps ignored


def test_change_points_must_change_to_the_same_level():
    a = levels_tensor([[1, 2, 2]])
    b = levels_tensor([[1, 0, 0]])
    assert tr.change_point_agreement(a, b) == 0.0
    assert tr.compressed_change_point_agreement(a, b) == 0.0


def test_different_initial_levels_disagree_even_with_the_same_change_points():
    a = levels_tensor([[0, 2, 2]])
    b = levels_tensor([[1, 2, 2]])
    assert change_points([0, 2, 2]) == change_points([1, 2, 2])
    assert tr.change_point_agreement(a, b) == 0.0
    assert tr.compressed_change_point_agreement(a, b) == 0.0


def test_oscillation_collapses_in_the_compressed_variant_only():
    a = levels_tensor([[1, 2, 1, 2, 2, 2]])  # A→B→A→B
    b = levels_tensor([[1, 1, 1, 1, 1, 2]])  # A→B
    assert tr.change_point_agreement(a, b) == 0.0
    assert tr.compressed_change_point_agreement(a, b) == 1.0


@pytest.mark.parametrize(
    ("path", "collapsed"),
    [
        ([1, 2, 1], [1, 2]),  # an oscillation leaves A→B wherever it stops
        ([1, 2, 1, 2, 1, 2, 1], [1, 2]),
        ([1, 2, 1, 0], [1, 2, 0]),  # the next new level follows B
        ([1, 2, 1, 2, 3, 2, 3], [1, 2, 3]),
        ([0, 1, 2, 3], [0, 1, 2, 3]),  # no return: nothing dropped
        ([2], [2]),
    ],
)
def test_compressed_paths_known_answers(path, collapsed):
    assert collapsed_path(path) == collapsed
    a, b = (
        levels_tensor([path]),
        levels_tensor([collapsed + [collapsed[-1]] * (len(path) - len(collapsed))]),
    )
    assert tr.compressed_change_point_agreement(a, b) == 1.0


def test_compressed_variant_keeps_a_real_difference():
    a = levels_tensor([[1, 2, 1, 1], [1, 2, 1, 2], [0, 0, 0, 0]])
    b = levels_tensor([[1, 2, 3, 3], [1, 2, 2, 2], [0, 0, 0, 1]])
    assert tr.compressed_change_point_agreement(a, b) == pytest.approx(1 / 3)


@examples(200)
@given(level_trajectories)
def test_change_point_agreements_match_the_literal_definitions(pair):
    a, b = (torch.tensor(x, dtype=torch.int16) for x in pair)
    assert tr.change_point_agreement(a, b) == pytest.approx(reference_change_point_agreement(a, b))
    assert tr.compressed_change_point_agreement(a, b) == pytest.approx(
        reference_compressed_agreement(a, b)
    )


def test_compressed_agreement_on_a_larger_trajectory_matches_the_loop():
    g = torch.Generator().manual_seed(1)
    w = torch.cumsum(torch.randn(200, 300, generator=g, dtype=torch.float64) * 0.1, dim=0)
    noise = torch.randn(200, 300, generator=g, dtype=torch.float64) * 0.05
    a, b = tr.level_indices(w, 2, 1.0), tr.level_indices(w + noise, 2, 1.0)
    result = tr.compressed_change_point_agreement(a, b)
    assert result == pytest.approx(reference_compressed_agreement(a, b))
    assert 0.0 < result < 1.0


# --- properties shared by the level metrics --------------------------------------------------

LEVEL_METRICS = [
    tr.quantized_weight_agreement,
    tr.change_point_agreement,
    tr.compressed_change_point_agreement,
]


@examples(100)
@given(level_trajectories)
def test_level_metrics_are_in_unit_interval_symmetric_and_one_on_themselves(pair):
    a, b = (torch.tensor(x, dtype=torch.int8) for x in pair)
    for metric in LEVEL_METRICS:
        value = metric(a, b)
        assert 0.0 <= value <= 1.0
        assert value == metric(b, a)
        assert metric(a, a.clone()) == 1.0
    per_step = tr.agreement_over_training(a, b)
    assert torch.equal(per_step, tr.agreement_over_training(b, a))
    assert torch.all((per_step >= 0) & (per_step <= 1))
    assert torch.all(tr.agreement_over_training(a, a) == 1.0)


# --- outputs ---------------------------------------------------------------------------------


def test_prediction_agreement_and_logit_mse_known_answers():
    a = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]])
    b = torch.tensor([[3.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]])
    assert tr.prediction_agreement(a, b) == 0.75  # ties go to the first class in both
    assert tr.logit_mse(a, b) == pytest.approx(3.0 / 12)


@examples(100)
@given(rows=st.integers(1, 8), classes=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_output_metrics_symmetric_and_exact_on_themselves(rows, classes, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(rows, classes, generator=g), torch.randn(rows, classes, generator=g)
    assert tr.prediction_agreement(a, a.clone()) == 1.0
    assert tr.logit_mse(a, a.clone()) == 0.0
    assert tr.prediction_agreement(a, b) == tr.prediction_agreement(b, a)
    assert 0.0 <= tr.prediction_agreement(a, b) <= 1.0
    assert tr.logit_mse(a, b) == tr.logit_mse(b, a) >= 0.0


def test_loss_correlation_known_answers():
    losses = [3.0, 2.0, 1.5, 1.2, 1.0]
    assert tr.loss_correlation(losses, [2 * x + 1 for x in losses]) == pytest.approx(1.0)
    assert tr.loss_correlation(torch.tensor(losses), [-x for x in losses]) == pytest.approx(-1.0)
    assert tr.loss_correlation([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    expected = np.corrcoef(losses, [3.0, 1.0, 2.0, 0.5, 0.7])[0, 1]
    assert tr.loss_correlation(losses, [3.0, 1.0, 2.0, 0.5, 0.7]) == pytest.approx(expected)


def test_loss_correlation_of_a_constant_curve_is_nan():
    assert math.isnan(tr.loss_correlation([1.0, 1.0, 1.0], [3.0, 2.0, 1.0]))
    assert math.isnan(tr.loss_correlation([3.0, 2.0, 1.0], [0.5, 0.5, 0.5]))


@examples(100)
@given(
    st.integers(2, 20).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n),
            st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n),
        )
    )
)
def test_loss_correlation_symmetric_and_bounded(pair):
    a, b = pair
    r = tr.loss_correlation(a, b)
    if math.isnan(r):
        assert len(set(a)) == 1 or len(set(b)) == 1
        return
    assert -1.0 <= r <= 1.0
    assert r == tr.loss_correlation(b, a)
    assert tr.loss_correlation(a, a) == pytest.approx(1.0)


# --- compare_runs ----------------------------------------------------------------------------


def small_runs():
    ste = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, -1.0]], dtype=torch.float64)
    mapped = ste.clone()
    mapped[-1, 0] += 0.1
    levels_a = levels_tensor([[1, 1, 2], [1, 2, 1]])
    levels_b = levels_tensor([[1, 1, 2], [1, 1, 1]])
    logits_a = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    logits_b = torch.tensor([[2.0, 1.0], [1.0, 0.0]])
    return (
        levels_a,
        levels_b,
        mapped,
        ste,
        0.5,
        logits_a,
        logits_b,
        [3.0, 2.0, 1.0],
        [3.0, 2.5, 1.0],
    )


def test_compare_runs_bundles_every_metric():
    result = tr.compare_runs(*small_runs())
    assert result.quantized_weight_agreement == 1.0  # final step only
    assert result.alignment_error == pytest.approx((0.1 / 0.5) / 3.0)
    assert result.change_point_agreement == 0.5
    assert result.compressed_change_point_agreement == 0.5  # 1→2→1 collapses to 1→2
    assert result.prediction_agreement == 0.5
    assert result.logit_mse == pytest.approx(0.5)
    assert result.loss_correlation == pytest.approx(np.corrcoef([3, 2, 1], [3, 2.5, 1])[0, 1])
    d = result.to_dict()
    assert list(d) == [
        "quantized_weight_agreement",
        "alignment_error",
        "change_point_agreement",
        "compressed_change_point_agreement",
        "prediction_agreement",
        "logit_mse",
        "loss_correlation",
    ]
    assert d["alignment_error"] == round((0.1 / 0.5) / 3.0, 6)
    assert all(isinstance(v, float) for v in d.values())


def test_compare_runs_takes_the_mapped_run_s_last_row_alone():
    args = list(small_runs())
    whole = tr.compare_runs(*args)
    args[2] = args[2][-1:]
    assert tr.compare_runs(*args) == whole
    with pytest.raises(ValueError, match="mapped_a and weights_b"):
        tr.compare_runs(*args[:2], args[2][:, :1], *args[3:])


def test_agreement_to_dict_keeps_nan_and_inf():
    a = tr.Agreement(1.0, math.inf, 1.0, 1.0, 1.0, 0.0, math.nan)
    d = a.to_dict()
    assert d["alignment_error"] == math.inf and math.isnan(d["loss_correlation"])


def test_compare_runs_names_its_own_arguments():
    args = list(small_runs())
    args[3] = args[3][:2]
    with pytest.raises(ValueError, match="mapped_a and weights_b"):
        tr.compare_runs(*args)


# --- bad input -------------------------------------------------------------------------------

LEVELS = torch.zeros(3, 2, dtype=torch.int8)
WEIGHTS = torch.zeros(3, 2, dtype=torch.float64)
LOGITS = torch.zeros(4, 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: tr.level_indices(torch.zeros(0), 2, 1.0), "w must not be empty"),
        (
            lambda: tr.level_indices(torch.zeros(3, dtype=torch.int64), 2, 1.0),
            "w must have a floating",
        ),
        (lambda: tr.level_indices(torch.tensor([math.nan]), 2, 1.0), "w must not contain NaN"),
        (lambda: tr.level_indices(torch.zeros(3), 0, 1.0), "bits"),
        (lambda: tr.level_indices(torch.zeros(3), 2, -1.0), "m "),
        (lambda: tr.level_indices(torch.zeros(2, 3), 2, torch.ones(2)), "m must be a number or"),
        (lambda: tr.quantized_weight_agreement(LEVELS, LEVELS[:2]), "levels_a and levels_b"),
        (
            lambda: tr.quantized_weight_agreement(LEVELS.float(), LEVELS),
            "levels_a must hold integer",
        ),
        (
            lambda: tr.quantized_weight_agreement(LEVELS, LEVELS.bool()),
            "levels_b must hold integer",
        ),
        (
            lambda: tr.quantized_weight_agreement(LEVELS[:0], LEVELS[:0]),
            "levels_a must not be empty",
        ),
        (lambda: tr.agreement_over_training(LEVELS[0], LEVELS[0]), "levels_a must be T × N"),
        (lambda: tr.change_point_agreement(LEVELS, LEVELS[:, :1]), "levels_a and levels_b"),
        (
            lambda: tr.change_point_agreement(LEVELS[:, :0], LEVELS[:, :0]),
            "levels_a must not be empty",
        ),
        (
            lambda: tr.compressed_change_point_agreement(LEVELS, [[0, 0]] * 3),
            "levels_b must be a torch",
        ),
        (
            lambda: tr.compressed_change_point_agreement(LEVELS[0], LEVELS[0]),
            "levels_a must be T × N",
        ),
        (lambda: tr.path_length(WEIGHTS[0], 1.0), "trajectory must be T × N"),
        (lambda: tr.path_length(WEIGHTS, torch.ones(3, dtype=torch.float64)), "shape \\(2,\\)"),
        (lambda: tr.path_length(WEIGHTS, torch.tensor([1.0, 0.0])), "m \\(the quantizer range\\)"),
        (
            lambda: tr.path_length(WEIGHTS, torch.ones(2, dtype=torch.int64)),
            "m must have a floating",
        ),
        (lambda: tr.path_length(WEIGHTS.int(), 1.0), "trajectory must have a floating"),
        (lambda: tr.path_length(WEIGHTS + math.inf, 1.0), "trajectory must be finite"),
        (lambda: tr.weight_alignment_error(WEIGHTS, WEIGHTS[1:], 1.0), "mapped_custom and ste"),
        (
            lambda: tr.weight_alignment_error(WEIGHTS[:0], WEIGHTS[:0], 1.0),
            "mapped_custom must not be empty",
        ),
        (
            lambda: tr.weight_alignment_error(WEIGHTS, WEIGHTS.int(), 1.0),
            "ste must have a floating",
        ),
        (lambda: tr.weight_alignment_error(WEIGHTS + math.nan, WEIGHTS, 1.0), "must be finite"),
        (lambda: tr.prediction_agreement(LOGITS, LOGITS[:, :2]), "logits_a and logits_b"),
        (lambda: tr.prediction_agreement(LOGITS[0], LOGITS[0]), "logits_a must be 2-dimensional"),
        (lambda: tr.prediction_agreement(LOGITS[:0], LOGITS[:0]), "logits_a must not be empty"),
        (lambda: tr.logit_mse(LOGITS, LOGITS.long()), "logits_b must have a floating"),
        (lambda: tr.logit_mse(LOGITS, LOGITS + math.nan), "logits_b must be finite"),
        (lambda: tr.loss_correlation([1.0, 2.0], [1.0, 2.0, 3.0]), "losses_a and losses_b"),
        (lambda: tr.loss_correlation([1.0], [1.0]), "losses_a must have at least 2"),
        (lambda: tr.loss_correlation([], [1.0, 2.0]), "losses_a must not be empty"),
        (lambda: tr.loss_correlation([1.0, 2.0], ["a", "b"]), "losses_b must be a 1-D tensor"),
        (
            lambda: tr.loss_correlation(torch.ones(2, 2), [1.0, 2.0]),
            "losses_a must be 1-dimensional",
        ),
        (lambda: tr.loss_correlation([1.0, math.nan], [1.0, 2.0]), "losses_a must be finite"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- the authors' definitions (mschoenb97/flax, examples/mnist/run_experiments.py) ------------


def authors_sequence(column: list[int]) -> list[tuple[int, int]]:
    """Initial (level, 0), then (new level, step) at each change: the authors' change points."""
    return [(column[0], 0), *change_points(column)]


def authors_collapse(sequence: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The authors' stack: while the top four read A,B,A,B keep the first A and the last B."""
    stack: list[tuple[int, int]] = []
    for entry in sequence:
        stack.append(entry)
        while len(stack) >= 4 and stack[-1][0] == stack[-3][0] and stack[-2][0] == stack[-4][0]:
            stack[-3:] = [stack[-1]]
    return stack


def reference_authors(a: torch.Tensor, b: torch.Tensor, collapse: bool) -> tuple[float, float]:
    agree, error, changes = 0, 0, 0
    for i in range(a.shape[1]):
        sa, sb = authors_sequence(a[:, i].tolist()), authors_sequence(b[:, i].tolist())
        if collapse:
            sa, sb = authors_collapse(sa), authors_collapse(sb)
        if len(sa) == len(sb) and all(x[0] == y[0] for x, y in zip(sa, sb, strict=True)):
            agree += 1
            error += sum(abs(x[1] - y[1]) for x, y in zip(sa, sb, strict=True))
            changes += len(sa) - 1
    return agree / a.shape[1], (error / changes if changes else math.nan)


def test_a_return_to_the_first_level_stays_in_the_authors_compression_only():
    """A→B→A against A→B: ours collapses the return and calls them equal; the authors' keeps it."""
    there_and_back = levels_tensor([[0, 1, 0, 0]])
    there = levels_tensor([[0, 1, 1, 1]])
    assert tr.compressed_change_point_agreement(there_and_back, there) == 1.0
    assert tr.authors_compressed_change_point_agreement(there_and_back, there).agreement == 0.0
    assert tr.collapse_oscillations([0, 1, 0], [0, 1, 2]) == ([0, 1, 0], [0, 1, 2])


def test_a_complete_oscillation_collapses_keeping_the_last_step():
    assert tr.collapse_oscillations([0, 1, 0, 1], [0, 1, 2, 3]) == ([0, 1], [0, 3])
    assert tr.collapse_oscillations([0, 1, 0, 1, 0], [0, 1, 2, 3, 4]) == ([0, 1, 0], [0, 3, 4])
    assert tr.collapse_oscillations([2, 0, 1, 0, 1, 3], [0, 1, 2, 3, 4, 5]) == (
        [2, 0, 1, 3],
        [0, 1, 4, 5],
    )


def test_changes_one_step_apart_agree_for_the_authors_with_a_step_error():
    """The same change one step later: ours (every step equal) disagrees; the authors' agrees,
    and reports the step error 1 per change point."""
    early, late = levels_tensor([[0, 1, 1, 2]]), levels_tensor([[0, 0, 1, 2]])
    assert tr.change_point_agreement(early, late) == 0.0
    exact = tr.authors_change_point_agreement(early, late)
    assert exact.agreement == 1.0
    assert exact.step_error == pytest.approx(0.5)  # |1-2| + |3-3| over 2 change points


def test_different_numbers_of_changes_disagree_for_the_authors():
    assert (
        tr.authors_change_point_agreement(
            levels_tensor([[0, 1, 2]]), levels_tensor([[0, 2, 2]])
        ).agreement
        == 0.0
    )


@given(level_trajectories)
@examples(60)
def test_authors_change_point_metrics_match_the_literal_loops(pair):
    a, b = (torch.tensor(x, dtype=torch.int8) for x in pair)
    for collapse, metric in (
        (False, tr.authors_change_point_agreement),
        (True, tr.authors_compressed_change_point_agreement),
    ):
        got = metric(a, b)
        want = reference_authors(a, b, collapse)
        assert got.agreement == pytest.approx(want[0])
        assert (
            math.isnan(got.step_error) and math.isnan(want[1])
        ) or got.step_error == pytest.approx(want[1])


def authors_oscillation_stack(sequence: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The authors' stack with its parallel list of counts: on each collapse the count four from
    the top goes up by one, three entries and their counts are popped, the last entry is pushed
    back with count 0. Returns (level, step, count) of what remains."""
    stack: list[tuple[int, int]] = []
    count: list[int] = []
    for entry in sequence:
        stack.append(entry)
        count.append(0)
        while len(stack) >= 4 and stack[-1][0] == stack[-3][0] and stack[-2][0] == stack[-4][0]:
            count[-4] += 1
            last = stack.pop()
            stack.pop()
            stack.pop()
            count.pop()
            count.pop()
            count.pop()
            stack.append(last)
            count.append(0)
    return [(level, step, c) for (level, step), c in zip(stack, count, strict=True)]


def reference_oscillations(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, float]:
    """total_q_oscillation, total_i_oscillation, average_oscillation_error, weight by weight."""
    total_a, total_b, error, changes = 0, 0, 0, 0
    for i in range(a.shape[1]):
        sa = authors_oscillation_stack(authors_sequence(a[:, i].tolist()))
        sb = authors_oscillation_stack(authors_sequence(b[:, i].tolist()))
        if len(sa) == len(sb) and all(x[0] == y[0] for x, y in zip(sa, sb, strict=True)):
            total_a += sum(x[2] for x in sa)
            total_b += sum(y[2] for y in sb)
            error += sum(abs(x[2] - y[2]) for x, y in zip(sa, sb, strict=True))
            changes += len(sa) - 1
    return total_a, total_b, (error / changes if changes else math.nan)


def test_oscillation_counts_count_each_collapse_on_the_first_level():
    assert tr.oscillation_counts([0, 1, 0, 1], [0, 1, 2, 3]) == ([0, 1], [0, 3], [1, 0])
    assert tr.oscillation_counts([0, 1, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5]) == ([0, 1], [0, 5], [2, 0])
    assert tr.oscillation_counts([2, 0, 1, 0, 1, 3, 1, 3], range(8)) == (
        [2, 0, 1, 3],
        [0, 1, 4, 7],
        [0, 1, 1, 0],
    )
    assert tr.oscillation_counts([0, 1, 0], [0, 1, 2]) == ([0, 1, 0], [0, 1, 2], [0, 0, 0])
    with pytest.raises(ValueError, match="same length"):
        tr.oscillation_counts([0, 1], [0])


def test_oscillation_metrics_count_only_weights_that_agree():
    """Weight 0 oscillates twice in a, once in b: the compressed sequences agree (0→1), so it adds
    2 and 1 to the totals and |2 − 1| = 1 to the error, over its one change point. Weight 1
    oscillates in a only, and a's compressed 0→1 against b's 0→1→0 disagree: it adds nothing."""
    a = levels_tensor([[0, 1, 0, 1, 0, 1, 1], [0, 1, 0, 1, 1, 1, 1]])
    b = levels_tensor([[0, 1, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0, 0]])
    got = tr.authors_compressed_change_point_agreement(a, b)
    assert (got.agreement, got.oscillations_a, got.oscillations_b) == (0.5, 2, 1)
    assert got.oscillation_error == 1.0
    assert reference_oscillations(a, b) == (2, 1, 1.0)
    swapped = tr.authors_compressed_change_point_agreement(b, a)
    assert (swapped.oscillations_a, swapped.oscillations_b) == (1, 2)
    still = levels_tensor([[0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    assert math.isnan(tr.authors_compressed_change_point_agreement(still, still).oscillation_error)


@given(level_trajectories)
@examples(60)
def test_oscillation_metrics_match_a_transcription_of_the_authors(pair):
    a, b = (torch.tensor(x, dtype=torch.int8) for x in pair)
    got = tr.authors_compressed_change_point_agreement(a, b)
    want = reference_oscillations(a, b)
    assert (got.oscillations_a, got.oscillations_b) == want[:2]
    assert (math.isnan(got.oscillation_error) and math.isnan(want[2])) or (
        got.oscillation_error == pytest.approx(want[2])
    )


def test_oscillation_metrics_on_long_oscillating_trajectories():
    """Many weights flipping between neighbouring levels, long enough for several collapses each:
    the vectorised totals equal the transcription's, and are far from trivial."""
    generator = torch.Generator().manual_seed(5)
    base = torch.randint(0, 4, (1, 300), generator=generator)
    flips_a = (torch.rand(200, 300, generator=generator) < 0.2).cumsum(0) % 2
    flips_b = (torch.rand(200, 300, generator=generator) < 0.2).cumsum(0) % 2
    a, b = ((base + f).clamp(max=3).to(torch.int8) for f in (flips_a, flips_b))
    got = tr.authors_compressed_change_point_agreement(a, b)
    want = reference_oscillations(a, b)
    assert (got.oscillations_a, got.oscillations_b) == want[:2]
    assert got.oscillations_a > 1000 and got.oscillations_b > 1000
    assert got.oscillation_error == pytest.approx(want[2]) and got.oscillation_error > 0


def test_wrong_prediction_agreement_counts_only_examples_both_get_wrong():
    labels = torch.tensor([0, 0, 0, 1])
    a = torch.tensor(
        [[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]]
    )  # right, wrong 1, wrong 1, right
    b = torch.tensor(
        [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    )  # right, wrong 1, wrong 2, wrong
    assert tr.wrong_prediction_agreement(a, b, labels) == 0.5
    assert math.isnan(tr.wrong_prediction_agreement(a, a, torch.tensor([0, 1, 1, 1])))
    with pytest.raises(ValueError, match="labels"):
        tr.wrong_prediction_agreement(a, b, labels[:3])


def test_mean_logit_difference_is_the_mean_absolute_difference():
    a, b = torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    assert tr.mean_logit_difference(a, b) == 1.0
    assert tr.logit_mse(a, b) == 2.5


def test_history_correlation_per_epoch():
    assert tr.history_correlation([3.0, 2.0, 1.0], [1.0, 0.5, 0.2]) > 0.9
    assert math.isnan(tr.history_correlation([1.0], [2.0]))


def test_authors_metrics_are_keyed_by_the_authors_names():
    levels = levels_tensor([[0, 1, 0, 0], [0, 0, 1, 1]])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    history = tr.History([1.0, 0.5], [1.2, 0.7], [0.5, 0.8])
    got = tr.authors_metrics(levels, levels, logits, logits, torch.tensor([1, 1]), history, history)
    assert got["exact_correct_sequences_proportion"] == got["correct_sequences_proportion"] == 1.0
    assert got["average_exact_step_count_error"] == 0.0
    assert got["total_q_oscillation"] == got["total_i_oscillation"] == 0.0
    assert got["average_oscillation_error"] == 0.0  # 3 change points, no oscillation
    assert got["incorrect_inference_agreement_proportion"] == 1.0
    assert got["avg_logit_difference"] == got["logit_mse"] == 0.0
    assert got["val_accuracy_correlation"] == pytest.approx(1.0)
