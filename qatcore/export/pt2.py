"""torch.export (``.pt2``) for PyTorch-native deployment, with a dynamic batch dimension."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """The model (in eval mode) traced by ``torch.export`` with the batch size left free.

    The source stack traces torch.export records for each node are dropped: they hold this
    machine's file paths, which a deployable file should not carry (and which made its size
    depend on where the code was checked out).
    """
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    return program


def save(program: torch.export.ExportedProgram, path: Path) -> None:
    torch.export.save(program, str(path))


def load(path: str | Path) -> nn.Module:
    """The reloaded program as a callable module."""
    return torch.export.load(str(path)).module()
