"""What every trainer measures on its data, whichever paper it trains for."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of examples whose arg-max prediction equals the label."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = sum(
        int(
            (
                model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu() == y[i : i + batch_size]
            ).sum()
        )
        for i in range(0, len(x), batch_size)
    )
    model.train(was_training)
    return correct / len(x)
