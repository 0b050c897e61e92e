"""One optimizer and its learning-rate schedule, as every training experiment of the course holds it.

The names mean the same everywhere, in training and on the quadratic of notebook 01:

* ``"sgd"`` is stochastic gradient descent with heavy-ball momentum ``λ`` (PyTorch's rule:
  ``p ← λ·p + g``, ``w ← w − η·p``). ``momentum=0`` is plain SGD. The default, 0.9, is the first
  paper's.
* ``"adam"`` is Adam with ``β₁ = 0.9`` and ``β₂ = 0.95``, the first paper's short second-moment window.

Where the third paper's settings differ they have names of their own (``PRESETS``): ``"bnn_adam"``
is Adam with PyTorch's and Keras's ``β₂ = 0.999`` at a constant rate 1e-3, the paper's recipe;
``"bnn_sgd"`` SGD with momentum 0.9 at a constant rate; ``"bop"`` is Bop (Helwegen et al., 2019)
for the binary weights, with its own ``gamma`` and ``threshold``, beside ``"bnn_adam"``'s Adam for
the other parameters. ``OptimizerConfig.of(name)`` is the config of that name, everywhere.

The schedule is a linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0
(``schedule="cosine"``), or the base rate throughout (``"constant"``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from qatcore.checks import check_choice, positive_number

#: the first paper's update rules, which its trainer builds (``OptimizerConfig.build``)
OPTIMIZERS = ("sgd", "adam")
#: every update rule a config may name: Bop needs to know which weights are binary, so
#: ``qatcore.bnn.optim.make_optimizer`` builds it
RULES = (*OPTIMIZERS, "bop")
SCHEDULES = ("cosine", "constant")
ADAM_BETA1 = 0.9


def learning_rate(
    step: int, total_steps: int, base_lr: float, warmup_fraction: float, from_zero: bool = False
) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0.

    The warm-up's first step has rate ``base_lr / warmup``, or 0 with ``from_zero`` (as in the
    authors' optax schedule, mschoenb97/flax, examples/mnist/matts_imports.py).
    """
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    if step < warmup:
        return base_lr * (step if from_zero else step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class OptimizerConfig:
    """The update rule (``name`` with its ``momentum``, ``beta2`` and ``eps``, or Bop's ``gamma`` and
    ``threshold``), the base rate ``lr`` and the schedule."""

    name: str = "sgd"
    lr: float = 1e-3  # for "bop": the rate of the Adam beside it
    momentum: float = 0.9  # "sgd" only; 0 is plain SGD
    beta2: float = 0.95  # "adam" (and the Adam beside "bop")
    eps: float = 1e-8  # "adam" (and the Adam beside "bop")
    warmup_fraction: float = 0.02
    warmup_from_zero: bool = False  # the authors' warm-up starts at 0; ours at lr / warm-up steps
    schedule: str = "cosine"
    gamma: float = 1e-2  # "bop" only: the rate of its gradient average
    threshold: float | None = None  # "bop" only: flip when |m| > τ; None: qatcore.bnn's per mode

    def __post_init__(self) -> None:
        check_choice("optimizer", self.name, RULES)
        check_choice("schedule", self.schedule, SCHEDULES)
        positive_number("lr", self.lr)
        positive_number("eps", self.eps)
        positive_number("gamma", self.gamma)
        if self.threshold is not None:
            positive_number("threshold", self.threshold)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.beta2 < 1:
            raise ValueError(f"beta2 must be in (0, 1), got {self.beta2!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")

    @classmethod
    def of(cls, value: OptimizerConfig | Mapping | str) -> OptimizerConfig:
        """``value`` itself, the config called ``value`` in ``PRESETS``, or the config of a TOML table
        such as ``{name = "adam", lr = 1e-4}`` (a rule's defaults, then the table's settings)."""
        if isinstance(value, OptimizerConfig):
            return value
        if isinstance(value, str):
            return PRESETS[check_choice("optimizer", value, tuple(PRESETS))]
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(
                    f"unknown optimizer setting(s) {unknown}; allowed: {sorted(known)}"
                )
            return cls(**value)
        raise TypeError(
            f"optimizer must be an OptimizerConfig, a name {tuple(PRESETS)} or a table of settings, "
            f"got {value!r}"
        )

    @property
    def label(self) -> str:
        """How a figure or a table names the rule, e.g. ``"SGD, momentum 0.9"``, ``"plain SGD"``, ``"Adam"``."""
        if self.name == "adam":
            return "Adam" if self.beta2 == 0.95 else f"Adam, β₂ {self.beta2:g}"
        if self.name == "bop":
            return "Bop"
        return f"SGD, momentum {self.momentum:g}" if self.momentum else "plain SGD"

    def scaled(self, factor: float) -> OptimizerConfig:
        """The same config with the base rate times ``factor``."""
        return dataclasses.replace(self, lr=self.lr * positive_number("factor", factor))

    def rate(self, step: int, total_steps: int) -> float:
        """The learning rate of step ``step`` (from 0) of ``total_steps``."""
        if self.schedule == "constant":
            return self.lr
        return learning_rate(
            step, total_steps, self.lr, self.warmup_fraction, self.warmup_from_zero
        )

    def build(self, params: Iterable) -> torch.optim.Optimizer:
        """A PyTorch optimizer over ``params`` (tensors, or groups of them) at the base rate."""
        if self.name == "bop":
            raise ValueError(
                "optimizer 'bop' needs to know which weights are binary: build it with "
                "qatcore.bnn.optim.make_optimizer"
            )
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        return torch.optim.Adam(params, lr=self.lr, betas=(ADAM_BETA1, self.beta2), eps=self.eps)


#: the named configs: each name means the same in every trainer, notebook and command
PRESETS: dict[str, OptimizerConfig] = {
    "sgd": OptimizerConfig("sgd"),  # paper 1: heavy-ball momentum 0.9, warm-up then cosine
    "adam": OptimizerConfig("adam"),  # paper 1: β₂ = 0.95, warm-up then cosine
    "bnn_adam": OptimizerConfig("adam", beta2=0.999, schedule="constant"),  # paper 3's recipe
    "bnn_sgd": OptimizerConfig("sgd", schedule="constant"),  # paper 3, SGD with momentum 0.9
    "bop": OptimizerConfig("bop", beta2=0.999, schedule="constant"),  # paper 3's Bop + Adam
}

__all__ = [
    "ADAM_BETA1",
    "OPTIMIZERS",
    "PRESETS",
    "RULES",
    "SCHEDULES",
    "OptimizerConfig",
    "learning_rate",
]
