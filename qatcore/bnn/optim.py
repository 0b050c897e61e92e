"""Adam for the two modes: torch's float32 Adam (standard) and an Adam whose state is float16.

``HalfAdam`` keeps the first moment ``m`` and the root of the second moment ``r = sqrt(v)`` in
float16, next to float16 weights, and does the arithmetic in float32 chunk by chunk (the CPU has
no float16 arithmetic worth the name, and chunks keep the float32 copies small). It stores ``r``
rather than ``v`` because ``v = g²`` underflows float16: BinaryNet's dense layer gets
``|dW| = 1/√(8192·1024) ≈ 3.4e-4``, so ``(1 − β₂)·g² ≈ 1e-10``, below float16's smallest value 6e-8.
"""

from __future__ import annotations

import torch
from torch import nn

from qatcore.checks import positive_number

CHUNK = 1 << 16  # values updated at a time in float32


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
                if p.grad is None:
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
                flat = [x.view(-1) for x in (p, p.grad, state["m"], state["r"])]
                for start in range(0, p.numel(), CHUNK):
                    w, g, m, r = (x[start : start + CHUNK] for x in flat)
                    g32 = g.float()
                    m32 = m.float().mul_(beta1).add_(g32, alpha=1 - beta1)
                    r32 = r.float().square_().mul_(beta2).addcmul_(g32, g32, value=1 - beta2).sqrt_()
                    w.copy_(w.float().addcdiv_(m32, r32.add(eps), value=-size))
                    m.copy_(m32)
                    r.copy_(r32)


def make_optimizer(model: nn.Module, mode: str, lr: float = 1e-3) -> torch.optim.Optimizer:
    """The paper's optimiser for ``mode``: float32 ``torch.optim.Adam`` or ``HalfAdam`` (lr 1e-3)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "low_memory":
        return HalfAdam(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)
