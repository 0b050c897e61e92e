"""Small helpers shared by several test modules (no tests here)."""

import torch
from torch import nn


def random_batch_norm_statistics(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in eval mode with random running statistics and shifts in every batch norm, so an
    export is checked on a network whose batch norms do something."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "running_mean") and hasattr(module, "running_var"):
            n = len(module.running_mean)
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.2)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.5 + 0.5)
    return model.eval()


def run_cli(capsys, *argv: str) -> tuple[int | str | None, str, str]:
    """``qatcore`` with ``argv`` in this process: its exit code (argparse's SystemExit included),
    stdout and stderr."""
    from qatcore.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err
