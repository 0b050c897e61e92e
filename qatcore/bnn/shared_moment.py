"""Adam's second moment of the binary weights, kept as the one value most weights share and the few that differ.

In the low-memory mode ``HalfAdam`` steps a binary weight on its scaled gradient ``√N·dW``: ±1 while ``|w| ≤ 1``
(``sign(0) = +1``), 0 where the weight has left [−1, 1]. So ``g² = 1`` at every step for every weight that has
stayed within ±1, and its second moment ``v ← β₂·v + (1 − β₂)·g²`` follows the same sequence as every other such
weight's: a layer's float16 ``v`` is one value almost everywhere. ``SharedMoment`` keeps that value, and, in index
order, the positions and values of ``v`` that differ from it bit for bit. That is lossless whatever the weights
do: any value that is not the shared one, bit for bit, is listed. Where the list would take as many bytes as ``v``
itself, ``v`` is kept whole instead (and stays whole).

A step reads ``v`` one chunk at a time into a working row (``read``), the optimiser updates the row, and ``write``
lists what differs from the new shared value: the value of the chunk's first weight whose gradient was not 0 and
that was not listed before, in the parameter's first chunk.
"""

from __future__ import annotations

import torch

#: the optimiser state's keys: the shared value (a float16 scalar), the listed positions (int32) and values
SHARED, INDEX, VALUES = "v_shared", "v_index", "v_values"
#: the key of a whole ``v``
WHOLE = "v"


class SharedMoment:
    """One parameter's ``v`` during a step: read chunk by chunk from its state, written back chunk by chunk in the
    same order (``start`` from 0 up), then stored (``store``)."""

    def __init__(self, state: dict, like: torch.Tensor) -> None:
        self.numel = like.numel()
        self.whole: torch.Tensor | None = state.get(WHOLE)
        if self.whole is None and self.numel >= 2**31:  # int32 positions
            self.whole = torch.zeros_like(like, dtype=torch.float16).view(-1)
        if self.whole is not None:
            self.whole = self.whole.view(-1)
            return
        if SHARED in state:
            self.shared, self.index, self.values = state[SHARED], state[INDEX], state[VALUES]
        else:  # a first step: v = 0
            self.shared = torch.zeros((), dtype=torch.float16, device=like.device)
            self.index = torch.empty(0, dtype=torch.int32, device=like.device)
            self.values = torch.empty(0, dtype=torch.float16, device=like.device)
        self.next_shared: torch.Tensor | None = None
        self.listed: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.count = 0

    def _range(self, start: int, stop: int) -> tuple[int, int]:
        """Where the listed positions from ``start`` to ``stop`` lie in ``index``."""
        if not self.index.numel():
            return 0, 0
        bounds = torch.tensor([start, stop], dtype=torch.int32, device=self.index.device)
        low, high = torch.searchsorted(self.index, bounds).tolist()
        return low, high

    def read(self, start: int, row: torch.Tensor) -> torch.Tensor:
        """``v`` from ``start`` for ``row``'s length: a view of a whole ``v``, or ``row`` filled with it."""
        if self.whole is not None:
            return self.whole[start : start + row.numel()]
        row.fill_(self.shared)
        low, high = self._range(start, start + row.numel())
        if high > low:
            row[self.index[low:high].long() - start] = self.values[low:high]
        return row

    def write(self, start: int, v: torch.Tensor, g: torch.Tensor) -> None:
        """Take the updated ``v`` from ``start`` (what ``read`` gave, now stepped; ``g`` the gradient it was stepped
        with)."""
        if self.whole is not None:
            part = self.whole[start : start + v.numel()]
            if part.data_ptr() != v.data_ptr():  # (a view of it was stepped in place)
                part.copy_(v)
            return
        if self.next_shared is None:
            self.next_shared = v[self._first_shared(start, g)].clone()
        if not _differ(v, self.next_shared):  # (as is usual)
            return
        differ = v.view(torch.int16) != self.next_shared.view(torch.int16)
        positions = differ.nonzero().view(-1)
        del differ
        self.count += positions.numel()
        self.listed.append(((positions + start).to(torch.int32), v[positions]))
        # a listed value takes 6 bytes (position, value), one of a whole v 2: from as many bytes on, v is kept whole
        if 6 * self.count >= 2 * self.numel:
            self._to_whole(start + v.numel())

    def _first_shared(self, start: int, g: torch.Tensor) -> int:
        """The position in the chunk from ``start`` of its first weight stepped with a gradient that is not 0 and
        not listed before (its first weight where there is none)."""
        low, high = self._range(start, start + 1)
        if high == low and bool(g[0] != 0):  # (as is usual: no pass over the chunk)
            return 0
        candidate = g != 0
        low, high = self._range(start, start + g.numel())
        candidate[self.index[low:high].long() - start] = False
        return int(candidate.byte().argmax())

    def _to_whole(self, written: int) -> None:
        """Turn what was written so far (up to ``written``) and the rest of the old state into a whole ``v``."""
        assert self.next_shared is not None
        whole = self.next_shared.expand(self.numel).clone()
        for positions, values in self.listed:
            whole[positions.long()] = values
        rest = slice(written, self.numel)
        low, high = self._range(written, self.numel)
        old = torch.empty(self.numel - written, dtype=torch.float16, device=whole.device)
        old.fill_(self.shared)
        old[self.index[low:high].long() - written] = self.values[low:high]
        whole[rest] = old
        self.whole = whole

    def store(self, state: dict, like: torch.Tensor) -> None:
        """Put ``v`` into the optimiser's ``state`` of the parameter ``like``."""
        for key in (WHOLE, SHARED, INDEX, VALUES):
            state.pop(key, None)
        if self.whole is not None:
            state[WHOLE] = self.whole.view(like.shape)
            return
        assert self.next_shared is not None  # (a step wrote every chunk)
        state[SHARED] = self.next_shared
        if len(self.listed) == 1:
            state[INDEX], state[VALUES] = self.listed[0]
        elif not self.listed:  # (not views of a list that is gone: they would keep its memory)
            state[INDEX] = self.index if not self.index.numel() else self.index.new_empty(0)
            state[VALUES] = self.values if not self.values.numel() else self.values.new_empty(0)
        else:
            state[INDEX] = torch.cat([p for p, _ in self.listed])
            state[VALUES] = torch.cat([v for _, v in self.listed])


def _differ(v: torch.Tensor, shared: torch.Tensor) -> bool:
    """Whether any value of the float16 ``v`` differs from ``shared`` bit for bit (compared four at a time)."""
    bits = int(shared.view(torch.int16))  # signed, as int16 views read it
    fourfold = (bits & 0xFFFF) * 0x0001_0001_0001_0001
    fourfold -= (fourfold >= 2**63) << 64  # signed, as int64 views read it
    whole = v.numel() // 4 * 4
    head = v[:whole].view(torch.int64) if v.storage_offset() % 4 == 0 else v[:0]
    if torch.count_nonzero(head != fourfold):
        return True
    return bool((v[head.numel() * 4 :].view(torch.int16) != bits).any())


def listed(optimizer) -> tuple[int, int]:
    """``(listed, weights)`` over the parameters of ``optimizer`` whose ``v`` is shared or was: how many values of ``v``
    differ from their shared one (all of a whole ``v``) and how many there are."""
    states = [s for s in optimizer.state.values() if SHARED in s or (WHOLE in s and "m" in s)]
    count = sum(s[INDEX].numel() if SHARED in s else s[WHOLE].numel() for s in states)
    return count, sum(s["m"].numel() for s in states)


def moment_bytes(optimizer) -> int:
    """Bytes of the binary weights' ``v`` in ``optimizer``'s state: shared values, listed positions and values, and
    every whole ``v``."""
    keys = (SHARED, INDEX, VALUES, WHOLE)
    tensors = [t for s in optimizer.state.values() for k, t in s.items() if k in keys]
    return sum(t.numel() * t.element_size() for t in tensors)


def whole_moment(state: dict, like: torch.Tensor) -> torch.Tensor:
    """The parameter ``like``'s ``v`` as a whole float16 tensor (a copy where it is kept shared)."""
    moment = SharedMoment(state, like)
    if moment.whole is not None:
        return moment.whole.view(like.shape)
    return moment.read(0, torch.empty(moment.numel, dtype=torch.float16)).view(like.shape)
