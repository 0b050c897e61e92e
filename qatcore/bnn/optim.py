"""Optimisers for the two modes: SGD with momentum, Adam and Bop, float32 (standard) or with float16 state.

``HalfAdam`` keeps Adam's two moments in float16, next to float16 weights, in one of two ways.

* The low-memory mode's binary weights (a ``unit_gradients`` group) have gradients ``±1/√N`` or 0 (N the
  weight's size). Adam does not change when every gradient is multiplied by one constant ``s`` and ``ε``
  by ``s`` too, so it runs on ``√N·dW`` (±1 or 0) with ``√N·ε``: the moments of ±1 stay in float16's
  normal range, and torch's fused Adam kernel updates weight, ``m`` and ``v`` in one pass per chunk,
  computing in float32 and rounding each once. ``g² = 1`` for every weight within ±1, so their ``v`` are one
  value: it is kept once, with the few that differ (``qatcore.bnn.shared_moment``).
* Any other parameter (the batch norms' β) keeps ``m`` and the root of the second moment ``r = sqrt(v)``, with the
  arithmetic in float32 chunk by chunk (chunks keep the float32 copies small); the float16 weight is
  updated in place from float32 operands, which torch computes in float32 and rounds once. It stores
  ``r`` rather than ``v`` because an unscaled ``v = g²`` underflows float16: BinaryNet's dense layer gets
  ``|dW| = 1/√(8192·1024) ≈ 3.4e-4``, so ``(1 − β₂)·g² ≈ 1e-10``, below float16's smallest value 6e-8.

All three read a binary layer's gradient through ``functions.weight_gradient``, so the low-memory
mode's 1-bit weight gradients (packed signs, no ``.grad``) are expanded one chunk at a time.

``Bop`` (Helwegen et al., 2019, "Latent weights do not exist", as in Larq) has no latent weights:
it keeps an exponential moving average ``m ← m + γ(g − m)`` of each binary weight's gradient and
flips the weight where ``w·m > τ``. The batch norms' β is trained by Adam beside it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qatcore import optimizers
from qatcore.bnn.functions import clear_weight_gradient, sign, weight_gradient
from qatcore.bnn.layers import BinaryLayer
from qatcore.bnn.shared_moment import INDEX, SharedMoment
from qatcore.checks import positive_number

#: values updated at a time: two working rows (float32 ``g`` and ``r``, or float16 ``√N·g`` and the mask), well
#: under what one layer's chunked backward works in (``functions.CHUNK_VALUES``); larger chunks mean fewer pieces
#: and less per-op overhead (2¹⁷ takes about 0.25 ms off the low-memory MLP's 14 ms step beside 2¹⁶, its peak
#: unchanged: the update runs after the backward, whose working copies are gone)
CHUNK = 1 << 17
#: the update rules (SGD with momentum, Adam, Bop), whose state the memory model counts
OPTIMIZERS = optimizers.RULES
#: the named configs the BNN trainer takes (those that keep the rate constant): "bnn_adam", "bnn_sgd", "bop"
BNN_OPTIMIZERS = tuple(n for n, c in optimizers.PRESETS.items() if c.schedule == "constant")
#: Bop's defaults here, chosen on digits (Larq's are γ = 1e-4, τ = 1e-8 for long ImageNet runs): adaptivity γ
#: (``optimizers.PRESETS["bop"].gamma``), and a threshold τ per mode, since the low-memory gradients
#: ``±1/√N`` are far larger than the standard ones
BOP_GAMMA = optimizers.PRESETS["bop"].gamma
BOP_THRESHOLD = {"standard": 1e-5, "low_memory": 1e-3}


def _chunks(p: torch.Tensor, *states: torch.Tensor, work: torch.Tensor, scale: float = 1.0):
    """``(w, g, *states, *scratch)``: flat views of ``CHUNK`` values at a time, ``g`` a copy of ``scale·dW`` in
    ``work[0]`` and scratch rows of the same length from ``work[1:]`` (``work``: rows of ``CHUNK`` values in the
    dtype ``g`` should have, reused for every chunk of every parameter: a step allocates its working copies once)."""
    flat = [x.view(-1) for x in (p, *states)]
    rows = work.unbind(0)[1:]
    for start in range(0, p.numel(), CHUNK):
        g = weight_gradient(p, start, start + CHUNK, work, scale)
        assert g is not None  # only parameters with a gradient are stepped (_has_gradient)
        n = g.numel()
        yield (
            *(x[start : start + CHUNK] for x in flat[:1]),
            g,
            *(x[start : start + CHUNK] for x in flat[1:]),
            *(rows if n == CHUNK else (row[:n] for row in rows)),
        )


#: parameters of at most this many values (batch norms' β, a last small layer) are updated together
SMALL = CHUNK // 4


def _pieces(entries, work: torch.Tensor, key=lambda p: 0):
    """``(params, w, g, *states, *scratch)`` over ``entries`` (``(parameter, states)`` pairs): each large
    parameter in chunks (``_chunks``), runs of small ones (``SMALL``, up to ``CHUNK`` values together, with
    equal ``key``) as one piece: their float32 gradients side by side in
    ``work[0]``, concatenated copies of their values and states, written back once the caller has updated
    them. Few large pieces keep the per-op overhead small beside the arithmetic."""
    run: list = []
    small = sorted((e for e in entries if e[0].numel() <= SMALL), key=lambda e: key(e[0]))
    for p, states in entries:
        if p.numel() > SMALL:
            for piece in _chunks(p, *states, work=work):
                yield ([p], *piece)
    for entry in [*small, None]:
        if run and (
            entry is None
            or key(entry[0]) != key(run[0][0])
            or sum(q.numel() for q, _ in run) + entry[0].numel() + 8 > CHUNK
        ):
            yield from _concatenated(run, work)
            run = []
        if entry is not None:
            run.append(entry)


def _concatenated(run, work: torch.Tensor):
    """The one piece of ``_pieces`` made of the small parameters in ``run``."""
    sizes = [p.numel() for p, _ in run]
    offset = 0
    for (p, _), size in zip(run, sizes, strict=True):
        weight_gradient(p, work=work[:, offset:])
        offset += size
    parts = [
        [p.view(-1) for p, _ in run],
        *([s[k].view(-1) for _, s in run] for k in range(len(run[0][1]))),
    ]
    copies = [torch.cat(tensors) for tensors in parts]
    yield (
        [p for p, _ in run],
        copies[0],
        work[0, :offset],
        *copies[1:],
        *(row[:offset] for row in work.unbind(0)[1:]),
    )
    for tensors, copy in zip(parts, copies, strict=True):
        torch._foreach_copy_(tensors, list(copy.split(sizes)))


def _workspace(
    optimizer: torch.optim.Optimizer, rows: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``rows`` working rows of ``CHUNK`` values for one step of ``optimizer``, on its parameters' device."""
    device = optimizer.param_groups[0]["params"][0].device
    return torch.empty((rows, CHUNK), dtype=dtype, device=device)


def _has_gradient(p: torch.Tensor) -> bool:
    return p.grad is not None or getattr(p, "grad_bits", None) is not None


class HalfAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba) with float16 state; parameters of any dtype. A group with ``unit_gradients=True``
    (gradients ``±1/√N`` or 0) keeps ``m`` and ``v`` of ``√N·dW`` and steps with torch's fused kernel; any
    other keeps ``m`` and ``r = sqrt(v)`` (see the module's docstring). With ``shared_moment`` (the default) a
    unit-gradient group keeps ``v`` as the value its weights share and the few that differ
    (``qatcore.bnn.shared_moment``): the same steps, bit for bit, without a float16 ``v`` per weight."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        shared_moment: bool = True,
    ) -> None:
        positive_number("lr", lr)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if not isinstance(shared_moment, bool):
            raise TypeError(f"shared_moment must be True or False, got {shared_moment!r}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=positive_number("eps", eps),
            unit_gradients=False,
            shared_moment=shared_moment,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        work = {}  # torch.dtype -> its two working rows (an untyped step, as torch's optimisers have)
        for group in self.param_groups:
            entries = []
            unit = group["unit_gradients"]
            for p in group["params"]:
                if not _has_gradient(p):
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, dtype=torch.float16)
                    if not unit or not group.get("shared_moment", True):  # (a shared v starts at 0)
                        state["v" if unit else "r"] = torch.zeros_like(p, dtype=torch.float16)
                state["step"] += 1
                entries.append((p, (state["m"],) if unit else (state["m"], state["r"])))
            dtype = torch.float16 if unit else torch.float32
            if dtype not in work:  # one pair of rows per dtype for the whole step
                work[dtype] = _workspace(self, 2, dtype)
            (self._unit_step if unit else self._root_step)(group, entries, work[dtype])
            for p, _ in entries:
                clear_weight_gradient(p)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, keeping a shared ``v``'s listed positions integers (torch casts the state of a float16
        parameter to float16)."""
        positions = {k: s[INDEX] for k, s in state_dict["state"].items() if INDEX in s}
        state = {
            k: {n: v for n, v in s.items() if n != INDEX} for k, s in state_dict["state"].items()
        }
        super().load_state_dict({**state_dict, "state": state})
        ids = (i for g in state_dict["param_groups"] for i in g["params"])
        params = (p for g in self.param_groups for p in g["params"])
        for i, p in zip(ids, params, strict=True):
            if i in positions:
                self.state[p][INDEX] = positions[i].to(device=p.device, dtype=torch.int32)

    def _unit_step(self, group: dict, entries, work: torch.Tensor) -> None:
        """The fused kernel on ``√N·dW`` with ``√N·ε``, one chunk (float16 rows of ``work``) at a time. The kernel,
        ``torch._fused_adam_``, is the one ``torch.optim.Adam(fused=True)`` calls (on the CPU since torch 2.4);
        calling it directly lets it run on one chunk's views and one gradient row."""
        beta1, beta2 = group["betas"]
        for p, (m,) in entries:
            scale = math.sqrt(p.numel())
            state = self.state[p]
            t = torch.tensor(float(state["step"]), device=p.device)
            v = SharedMoment(state, p)
            start = 0
            for w, g, m_part, row in _chunks(p, m, work=work, scale=scale):
                v_part = v.read(start, row)
                torch._fused_adam_(
                    [w],
                    [g],
                    [m_part],
                    [v_part],
                    [],
                    [t],
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=0.0,
                    eps=group["eps"] * scale,
                    amsgrad=False,
                    maximize=False,
                )
                v.write(start, v_part, g)
                start += g.numel()
            v.store(state, p)

    def _root_step(self, group: dict, entries, work: torch.Tensor) -> None:
        """``m`` and ``r = sqrt(v)`` updated in float32 rows of ``work``, runs of small parameters together."""
        beta1, beta2 = group["betas"]
        for params, w, g, m, r, r32 in _pieces(entries, work, key=lambda q: self.state[q]["step"]):
            t = self.state[params[0]]["step"]
            size = group["lr"] * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
            eps = group["eps"] * (1 - beta2**t) ** 0.5
            r.copy_(r32.copy_(r).square_().mul_(beta2).addcmul_(g, g, value=1 - beta2).sqrt_())
            m.copy_(g.mul_(1 - beta1).add_(m, alpha=beta1))  # g becomes the new m, in float32
            w.addcdiv_(
                g, r32.add_(eps), value=-size
            )  # float32 operands: computed in float32, rounded once


class HalfSGD(torch.optim.Optimizer):
    """SGD with momentum (``p ← λp + g``, ``w ← w − lr·p``, as ``torch.optim.SGD``) with a float16 buffer."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9) -> None:
        positive_number("lr", lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        work = _workspace(self, 2)
        for group in self.param_groups:
            entries = []
            for p in group["params"]:
                if not _has_gradient(p):
                    continue
                state = self.state[p]
                if not state:  # λ·0 + g = g: the first step copies g, as torch's SGD does
                    state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float16)
                entries.append((p, (state["momentum_buffer"],)))
            for _, w, g, b, _mask_row in _pieces(entries, work):
                b.copy_(g.add_(b, alpha=group["momentum"]))  # g becomes the new buffer, in float32
                w.add_(g, alpha=-group["lr"])
            for p, _ in entries:
                clear_weight_gradient(p)


class Bop(torch.optim.Optimizer):
    """Bop on ±1 weights: ``m ← m + γ(g − m)``; flip ``w`` where ``w·m > τ`` (Larq's rule).

    ``m`` is float32, or float16 with ``half``; float16 keeps ``√N·m`` (N the weight's size) so that
    the low-memory gradients ``±1/√N`` stay in float16's normal range, and compares it with ``√N·τ``.
    The constructor sets each weight to its sign (the binary weight it already computes with).
    """

    def __init__(
        self, params, gamma: float = BOP_GAMMA, threshold: float = 1e-5, half: bool = False
    ) -> None:
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
        if not threshold >= 0:
            raise ValueError(f"threshold must be at least 0, got {threshold!r}")
        super().__init__(params, dict(gamma=gamma, threshold=threshold, half=bool(half)))
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.copy_(sign(p.float()))

    @torch.no_grad()
    def step(self, closure=None):
        work = _workspace(self, 2)
        for group in self.param_groups:
            gamma, half = group["gamma"], group["half"]
            for p in group["params"]:
                if not _has_gradient(p):
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, dtype=torch.float16 if half else torch.float32)
                scale = math.sqrt(p.numel()) if half else 1.0
                for w, g, m, m32 in _chunks(
                    p, state["m"], work=work
                ):  # √N differs: chunks of one weight
                    m32.copy_(m).lerp_(g.mul_(scale) if half else g, gamma)
                    flip = torch.mul(w, m32) > group["threshold"] * scale
                    w.copy_(torch.where(flip, -w, w))
                    m.copy_(m32)
                clear_weight_gradient(p)


class Optimizers:
    """Several optimisers stepped as one (Bop for binary weights, Adam for the rest), like Larq's
    ``CaseOptimizer``; ``state`` is the union of their states."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = [o for o in optimizers if o.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


def make_optimizer(
    model: nn.Module,
    mode: str,
    optimizer: optimizers.OptimizerConfig | str = "bnn_adam",
    shared_moment: bool = True,
):
    """The optimiser for ``mode`` from a config or a preset name (``qatcore.optimizers.PRESETS``):
    ``"bnn_adam"`` (the paper's, lr 1e-3, β₂ 0.999), SGD with momentum, or Bop for the binary weights
    with Adam for the rest; float32 torch optimisers (standard) or float16 state (low-memory). The
    rate is the config's base rate: the trainer keeps it constant. In the low-memory mode Adam keeps
    the binary weights' ``v`` shared (``HalfAdam``'s ``shared_moment``) unless ``shared_moment`` is False.

    Bop has no latent weights to clip, so it switches the binary layers' ``|w| ≤ 1`` gradient mask off;
    its ``threshold`` defaults to ``BOP_THRESHOLD[mode]``.
    """
    config = optimizers.OptimizerConfig.of(optimizer)
    lr, betas, eps = config.lr, (optimizers.ADAM_BETA1, config.beta2), config.eps
    low = mode == "low_memory"
    binary = {id(m.weight) for m in model.modules() if isinstance(m, BinaryLayer)}
    for m in model.modules():
        if isinstance(m, BinaryLayer):
            m.clip = config.name != "bop"
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        return (
            HalfSGD(params, lr=lr, momentum=config.momentum)
            if low
            else torch.optim.SGD(params, lr=lr, momentum=config.momentum)
        )
    rest = [p for p in params if id(p) not in binary]
    if config.name == "adam" and low:  # the binary weights' gradients are ±1/√N or 0
        return HalfAdam(
            [
                {"params": [p for p in params if id(p) in binary], "unit_gradients": True},
                {"params": rest},
            ],
            lr=lr,
            betas=betas,
            eps=eps,
            shared_moment=shared_moment,
        )
    if config.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)
    adam = (
        HalfAdam(rest, lr=lr, betas=betas, eps=eps)
        if low
        else torch.optim.Adam(rest, lr=lr, betas=betas, eps=eps)
    )
    threshold = BOP_THRESHOLD["low_memory" if low else "standard"]
    if config.threshold is not None:
        threshold = config.threshold
    return Optimizers(
        Bop([p for p in params if id(p) in binary], config.gamma, threshold, half=low), adam
    )
