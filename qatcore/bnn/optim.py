"""Optimisers for the two modes: SGD with momentum, Adam and Bop, float32 (standard) or with float16 state.

``HalfAdam`` keeps the first moment ``m`` and the root of the second moment ``r = sqrt(v)`` in
float16, next to float16 weights, and does the arithmetic in float32 chunk by chunk (the CPU has
no float16 arithmetic worth the name, and chunks keep the float32 copies small). It stores ``r``
rather than ``v`` because ``v = g²`` underflows float16: BinaryNet's dense layer gets
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

from qatcore.bnn.functions import clear_weight_gradient, sign, weight_gradient
from qatcore.bnn.layers import BinaryLayer
from qatcore.checks import positive_number

CHUNK = 1 << 14  # values updated at a time in float32 (a few 64 KiB working copies)
OPTIMIZERS = ("sgd", "adam", "bop")
#: Bop's defaults here, chosen on digits (Larq's are γ = 1e-4, τ = 1e-8 for long ImageNet runs): adaptivity γ,
#: and a threshold τ per mode, since the low-memory gradients ``±1/√N`` are far larger than the standard ones
BOP_GAMMA = 1e-2
BOP_THRESHOLD = {"standard": 1e-5, "low_memory": 1e-3}


def _chunks(p: torch.Tensor, *states: torch.Tensor):
    """``(w, g, *states)`` flat float views of ``CHUNK`` values at a time, ``g`` as float32."""
    flat = [x.view(-1) for x in (p, *states)]
    for start in range(0, p.numel(), CHUNK):
        g = weight_gradient(p, start, start + CHUNK)
        yield (flat[0][start : start + CHUNK], g, *(x[start : start + CHUNK] for x in flat[1:]))


def _has_gradient(p: torch.Tensor) -> bool:
    return p.grad is not None or getattr(p, "grad_bits", None) is not None


class HalfAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba) with float16 state ``m`` and ``r = sqrt(v)``; parameters of any dtype."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        positive_number("lr", lr)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=positive_number("eps", eps)))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if not _has_gradient(p):
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, dtype=torch.float16)
                    state["r"] = torch.zeros_like(p, dtype=torch.float16)
                state["step"] += 1
                t = state["step"]
                size = group["lr"] * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
                eps = group["eps"] * (1 - beta2**t) ** 0.5
                for w, g32, m, r in _chunks(p, state["m"], state["r"]):
                    m32 = m.float().mul_(beta1).add_(g32, alpha=1 - beta1)
                    r32 = r.float().square_().mul_(beta2).addcmul_(g32, g32, value=1 - beta2).sqrt_()
                    w.copy_(w.float().addcdiv_(m32, r32.add(eps), value=-size))
                    m.copy_(m32)
                    r.copy_(r32)
                clear_weight_gradient(p)


class HalfSGD(torch.optim.Optimizer):
    """SGD with momentum (``b ← μb + g``, ``w ← w − lr·b``, as ``torch.optim.SGD``) with a float16 buffer."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9) -> None:
        positive_number("lr", lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if not _has_gradient(p):
                    continue
                state = self.state[p]
                fresh = not state
                if fresh:
                    state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float16)
                for w, g32, b in _chunks(p, state["momentum_buffer"]):
                    b32 = g32 if fresh else b.float().mul_(group["momentum"]).add_(g32)
                    w.copy_(w.float().add_(b32, alpha=-group["lr"]))
                    b.copy_(b32)
                clear_weight_gradient(p)


class Bop(torch.optim.Optimizer):
    """Bop on ±1 weights: ``m ← m + γ(g − m)``; flip ``w`` where ``w·m > τ`` (Larq's rule).

    ``m`` is float32, or float16 with ``half``; float16 keeps ``√N·m`` (N the weight's size) so that
    the low-memory gradients ``±1/√N`` stay in float16's normal range, and compares it with ``√N·τ``.
    The constructor sets each weight to its sign (the binary weight it already computes with).
    """

    def __init__(self, params, gamma: float = BOP_GAMMA, threshold: float = 1e-5, half: bool = False) -> None:
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
        for group in self.param_groups:
            gamma, half = group["gamma"], group["half"]
            for p in group["params"]:
                if not _has_gradient(p):
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, dtype=torch.float16 if half else torch.float32)
                scale = math.sqrt(p.numel()) if half else 1.0
                for w, g32, m in _chunks(p, state["m"]):
                    m32 = m.float().add_(g32 * scale - m.float(), alpha=gamma)
                    flip = (w.float() * m32) > group["threshold"] * scale
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


def make_optimizer(model: nn.Module, mode: str, lr: float = 1e-3, optimizer: str = "adam",
                   gamma: float = BOP_GAMMA, threshold: float | None = None):
    """The optimiser for ``mode``: Adam (the paper's, lr 1e-3), SGD with momentum 0.9, or Bop for the
    binary weights with Adam for the rest; float32 torch optimisers (standard) or float16 state (low-memory).

    Bop has no latent weights to clip, so it switches the binary layers' ``|w| ≤ 1`` gradient mask off;
    its ``threshold`` defaults to ``BOP_THRESHOLD[mode]``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    low = mode == "low_memory"
    binary = {id(m.weight) for m in model.modules() if isinstance(m, BinaryLayer)}
    for m in model.modules():
        if isinstance(m, BinaryLayer):
            m.clip = optimizer != "bop"
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        return HalfSGD(params, lr=lr, momentum=0.9) if low else torch.optim.SGD(params, lr=lr, momentum=0.9)
    if optimizer == "adam":
        return HalfAdam(params, lr=lr) if low else torch.optim.Adam(params, lr=lr)
    rest = [p for p in params if id(p) not in binary]
    adam = HalfAdam(rest, lr=lr) if low else torch.optim.Adam(rest, lr=lr)
    threshold = BOP_THRESHOLD["low_memory" if low else "standard"] if threshold is None else threshold
    return Optimizers(Bop([p for p in params if id(p) in binary], gamma, threshold, half=low), adam)
