"""torch.export (``.pt2``) for PyTorch-native deployment, with a dynamic batch dimension.

PikeLPN's quantizers recompute their scales (and check them, data-dependently) on every call,
which ``torch.export`` cannot trace. ``freeze`` gives a copy whose quantized weights, QuantNorm
multiply-adds and activation clip levels are computed once, in eval mode, the values the model
itself uses: the deployed program only applies them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from qatcore.export import pikelpn


class FrozenAffine(nn.Module):
    """A QuantNorm in eval mode: ``y = Q(a)·x + Q(b)`` per channel, with ``Q(a)``, ``Q(b)`` fixed."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale[None, :, None, None] + self.shift[None, :, None, None]


class FrozenActQuant(nn.Module):
    """An ActQuant in eval mode with its clip level ``α`` fixed (the same forward otherwise)."""

    alpha: torch.Tensor

    def __init__(self, module) -> None:
        super().__init__()
        self.bits, self.estimator = module.bits, module.estimator
        self.register_buffer("alpha", module.clip_level().detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.minimum(torch.relu(x), self.alpha)
        m = self.alpha
        return m * (self.estimator.quantize(2 * y / m - 1, self.bits, 1.0) + 1) / 2


@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with PikeLPN's quantizers computed once; other layers as they are."""
    frozen = copy.deepcopy(model).eval()
    if pikelpn.PikeConv2d is None:
        return frozen
    for name, module in list(frozen.named_modules()):
        if not name:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = frozen.get_submodule(parent_name) if parent_name else frozen
        if (
            type(module) in (pikelpn.PikeConv2d, pikelpn.PikeLinear)
            and module.weight_quantizer is not None
        ):
            module.weight.copy_(module.quantized_weight())
            module.weight_quantizer = None
        elif type(module) is pikelpn.QuantNorm:
            setattr(
                parent,
                child,
                FrozenAffine(*module.quantized_affine(module.running_mean, module.running_var)),
            )
        elif type(module) is pikelpn.ActQuant and module.bits is not None:
            setattr(parent, child, FrozenActQuant(module))
    return frozen


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """The model (in eval mode, ``freeze``-d) traced by ``torch.export`` with the batch size left free.

    The source stack traces torch.export records for each node are dropped: they hold this
    machine's file paths, which a deployable file should not carry (and which made its size
    depend on where the code was checked out).
    """
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.export.export(freeze(model), (example,), dynamic_shapes=({0: batch},))
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    return program


def save(program: torch.export.ExportedProgram, path: Path) -> None:
    """Write ``program`` to ``path``. Through an open file, so the archive's folder inside is always
    ``archive/``: saved by name, torch names it after the file, and an export written to a temporary
    name first (as every export is) would carry that name, and its size would vary from run to run."""
    with open(path, "wb") as file:
        torch.export.save(program, file)


def load(path: str | Path) -> nn.Module:
    """The reloaded program as a callable module."""
    return torch.export.load(str(path)).module()
