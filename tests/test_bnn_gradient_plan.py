"""The plan of kept gradients of the streamed backward (``qatcore.bnn.gradient_plan``), against every plan."""

from __future__ import annotations

import itertools
import random

import pytest

from qatcore.bnn import streamed
from qatcore.bnn.gradient_plan import gradient_rows
from qatcore.bnn.models import CNV, BinaryNet, set_mode


def _valid(plan, rows) -> bool:
    """A partly kept gradient's source (the one above it) is kept whole."""
    return all(r == rows or k + 1 == len(plan) or plan[k + 1] == rows for k, r in enumerate(plan))


def _holdings(plan, row_bytes, rows) -> list[int]:
    """Bytes of float16 gradients each pass holds: pass ``s`` holds its source (gradient ``s``; with the whole one
    above where it is kept in part) and the gradient it makes (``s − 1``)."""
    count, held = len(plan), []
    for s in range(count + 1):
        total = plan[s - 1] * row_bytes[s - 1] if s else 0
        if s < count:
            total += plan[s] * row_bytes[s]
            if plan[s] < rows and s + 1 < count:
                total += rows * row_bytes[s + 1]
        held.append(total)
    return held


def _raise(plan, row_bytes, rows, allowance) -> int:
    """How much every allowance must be raised alike for ``plan`` to fit (0 where it fits)."""
    return max(
        0, *(h - a for h, a in zip(_holdings(plan, row_bytes, rows), allowance, strict=True))
    )


def _cost(plan, row_costs, rows) -> float:
    return sum((rows - r) * c for r, c in zip(plan, row_costs, strict=True))


def _every_plan(count: int, rows: int):
    return (p for p in itertools.product(range(rows + 1), repeat=count) if _valid(p, rows))


@pytest.mark.parametrize("seed", range(60))
def test_the_plan_is_the_cheapest_within_the_allowances_or_the_least_raise(seed):
    """On small random networks, against every plan: none recomputes less within the allowances; where none
    fits them, none fits with a smaller raise of them all, and none recomputes less with that raise."""
    rng = random.Random(seed)
    count, rows = rng.randint(1, 5), rng.randint(1, 4)
    row_bytes = [rng.choice([1, 2, 3, 8, 50, 128]) for _ in range(count)]
    row_costs = [rng.choice([1.0, 3.0, 10.0, 70.0]) for _ in range(count)]
    allowance = [rng.randint(0, 2 * rows * max(row_bytes)) for _ in range(count + 1)]
    plan = gradient_rows(row_bytes, row_costs, rows, allowance)
    assert len(plan) == count and _valid(plan, rows)
    plans = list(_every_plan(count, rows))
    least = min(_raise(p, row_bytes, rows, allowance) for p in plans)
    assert _raise(plan, row_bytes, rows, allowance) == least
    fitting = [p for p in plans if _raise(p, row_bytes, rows, allowance) <= least]
    assert _cost(plan, row_costs, rows) == min(_cost(p, row_costs, rows) for p in fitting)


def test_every_gradient_is_kept_whole_where_the_budget_allows():
    row_bytes, row_costs = [100, 30, 60], [5.0, 5.0, 5.0]
    enough = [10 * 100, 10 * (100 + 30), 10 * (30 + 60), 10 * 60]
    assert gradient_rows(row_bytes, row_costs, 10, enough) == [10, 10, 10]
    for s in range(4):
        short = [a - (i == s) for i, a in enumerate(enough)]
        assert gradient_rows(row_bytes, row_costs, 10, short) != [10, 10, 10]
    assert gradient_rows([], [], 10, [0]) == []


def test_a_smaller_gradient_share_never_plans_more_gradient_memory():
    """CNV's and BinaryNet's plans at batch 100 over shares from 1 to 0: the most any pass holds never grows as
    the share shrinks (the rule it replaces kept every other gradient whole at tiny shares), and the largest
    gradient is recomputed in part at every share."""
    for build in (CNV, BinaryNet):
        net = set_mode(build(), "low_memory").train()
        stages = streamed.stages_of(net)
        assert stages is not None
        shape = (100, *net.input_shape)
        peaks = []
        for share in (1.0, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05, 0.0):
            with streamed.budgets(gradient_share=share):
                streamed.plan(stages, shape)
            row_bytes = [2 * streamed._per_example(st.shapes["out"]) for st in stages[:-1]]
            plan = [st.gradient_rows for st in stages[:-1]]
            largest = row_bytes.index(max(row_bytes))
            assert plan[largest] < 100, (build.__name__, share, plan)
            peaks.append(max(_holdings(plan, row_bytes, 100)))
        assert peaks == sorted(peaks, reverse=True), (build.__name__, peaks)


def test_mismatched_sizes_and_costs_are_refused():
    with pytest.raises(ValueError, match="one entry per gradient"):
        gradient_rows([2, 4], [1.0], 3, [10, 10, 10])
    with pytest.raises(ValueError, match="one per pass"):
        gradient_rows([2, 4], [1.0, 1.0], 3, [10, 10])
