"""Which gradients between stages the streamed backward keeps, and which it recomputes.

The streamed low-memory backward (``qatcore.bnn.streamed``) runs over the stages from the top. Stage ``s``'s pass
reads the gradient of its output (its *source*) and makes the gradient of the stage below's output, which the next
pass reads. That gradient is either kept whole in float16, or only its first rows, the others recomputed, chunk by
chunk, from the source that made them; a partly kept gradient's source is then kept whole, so that no
recomputation waits on another. The float16 gradients alive during pass ``s`` are:

* its source (whole, or its kept rows);
* the whole gradient above it, where the source is partly kept;
* the gradient the pass makes (whole, or its kept rows).

``gradient_rows`` chooses, for every gradient, whole or how many rows, so that every pass holds no more than its
allowance of bytes and the fewest multiply-adds are recomputed. Where no choice fits, it raises every allowance
alike by the least amount one fits with, and takes the fewest multiply-adds within that. Every choice gives the
same bits: only where the rows come from changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_WHOLE, _PART = 0, 1
#: (multiply-adds recomputed, rows kept of each gradient from some k up)
_Plan = tuple[float, list[int]]


def gradient_rows(
    row_bytes: Sequence[int], row_costs: Sequence[float], rows: int, allowance: Sequence[int]
) -> list[int]:
    """Rows kept of each gradient between two stages (index ``k``: the gradient of stage ``k``'s output, made by
    stage ``k + 1``'s pass); ``rows`` where it is kept whole. ``row_bytes[k]``: its bytes per row;
    ``row_costs[k]``: what recomputing one of its rows costs (multiply-adds of stage ``k + 1``'s input
    gradient); ``allowance[s]``: bytes of float16 gradients pass ``s`` may hold, one more entry than gradients
    (see the module's docstring)."""
    if len(row_bytes) != len(row_costs) or len(allowance) != len(row_bytes) + 1:
        raise ValueError(
            "row_bytes and row_costs need one entry per gradient and allowance one per pass (one more), got "
            f"{len(row_bytes)}, {len(row_costs)} and {len(allowance)}"
        )
    if not row_bytes:
        return []
    plan = _Planner(row_bytes, row_costs, rows, allowance).cheapest()
    if plan is None:  # the least raise a plan fits: with every gradient kept whole, ``high`` fits
        whole = [rows * b for b in row_bytes]
        pairs = [a + b for a, b in zip([*whole, 0], [0, *whole], strict=True)]
        low, high = 0, max(max(p - a for p, a in zip(pairs, allowance, strict=True)), 1)
        while high - low > 1:
            middle = (low + high) // 2
            fits = _Planner(row_bytes, row_costs, rows, [a + middle for a in allowance]).cheapest()
            low, high = (low, middle) if fits is not None else (middle, high)
        plan = _Planner(row_bytes, row_costs, rows, [a + high for a in allowance]).cheapest()
    assert plan is not None  # (for mypy)
    return plan


@dataclass
class _Planner:
    """The plan within ``allowance`` that recomputes the fewest multiply-adds (``cheapest``), by dynamic
    programming from the top gradient down over each gradient's two choices, whole or in part (as many rows as
    fit beside its two neighbours, both then whole)."""

    row_bytes: Sequence[int]
    row_costs: Sequence[float]
    rows: int
    allowance: Sequence[int]

    def kept(self, k: int, choice: int) -> int | None:
        """Rows of gradient ``k`` kept as ``choice``, or None where it cannot be kept in part."""
        if choice == _WHOLE:
            return self.rows
        above = self.rows * self.row_bytes[k + 1] if k + 1 < len(self.row_bytes) else 0
        below = self.rows * self.row_bytes[k - 1] if k else 0
        # pass k + 1 holds the kept rows and gradient k + 1; pass k those, the one above it and gradient k − 1
        room = min(self.allowance[k + 1] - above, self.allowance[k] - above - below)
        if room < 0:
            return None
        return min(self.rows - 1, room // max(self.row_bytes[k], 1))

    def held(self, k: int, choice: int) -> int:
        """Bytes of gradient ``k`` (its kept rows), and of the whole one above where it is kept in part."""
        r = self.kept(k, choice)
        assert r is not None
        above = k + 1 < len(self.row_bytes) and choice == _PART
        return r * self.row_bytes[k] + (self.rows * self.row_bytes[k + 1] if above else 0)

    def cheapest(self) -> list[int] | None:
        # best[choice]: the cheapest plan of gradients k … with gradient k kept as ``choice``; above the top one,
        # the empty plan (the top pass holds only the top gradient: the logits' gradient is not counted)
        best: list[_Plan | None] = [(0.0, []), None]
        for k in range(len(self.row_bytes) - 1, -1, -1):
            best = [self._extend(k, choice, best) for choice in (_WHOLE, _PART)]
        # the bottom pass (stage 0's) holds gradient 0, with the one above where it is kept in part
        plans = [
            p for c, p in enumerate(best) if p is not None and self.held(0, c) <= self.allowance[0]
        ]
        return min(plans, key=lambda p: p[0])[1] if plans else None

    def _extend(self, k: int, choice: int, above: list[_Plan | None]) -> _Plan | None:
        """The cheapest plan of gradients ``k`` … with gradient ``k`` kept as ``choice``, from the cheapest of
        those above it (``above``), or None where none fits."""
        r = self.kept(k, choice)
        if r is None:
            return None
        options = []
        for upper, plan in enumerate(above):
            if plan is None or (upper == _PART and choice == _PART):
                continue  # (a partly kept gradient's source is kept whole)
            # pass k + 1 holds gradient k + 1 as chosen (none above the top one) and gradient k's kept rows
            holding = (self.held(k + 1, upper) if plan[1] else 0) + r * self.row_bytes[k]
            if holding <= self.allowance[k + 1]:
                options.append((plan[0] + (self.rows - r) * self.row_costs[k], [r, *plan[1]]))
        return min(options, key=lambda o: o[0], default=None)
