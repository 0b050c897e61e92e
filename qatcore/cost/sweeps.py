"""Counting whole models: one model on a zero batch with one pair of bit widths, sweeps of bit
widths over several models, and the rank correlations between ACE, ACEv2 and energy across a sweep.
The counting itself is ``qatcore.cost.ace.count``; models by name come from ``qatcore.zoo``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from qatcore.cost.ace import bits_pair, count, example_input
from qatcore.cost.cost_models import FLOAT_BITS, AceReport, CostModel


def count_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    w_bits: int | None = None,
    a_bits: int | None = None,
    elementwise_bits: int | None = None,
    cost_model: str | CostModel = "acev2",
    batch_size: int = 1,
    float_bits: int = FLOAT_BITS,
    per_image: bool = True,
) -> AceReport:
    """``count`` for ``model`` on a zero batch of ``batch_size`` inputs of ``input_shape`` (no batch);
    ``w_bits`` and ``a_bits`` (both or neither) set every conv/linear layer, else each layer keeps
    its own. ``qatcore ace`` builds the model by name with ``qatcore.zoo.load``."""
    if (w_bits is None) != (a_bits is None):
        raise ValueError(
            f"w_bits and a_bits must be given together, got w_bits={w_bits!r}, a_bits={a_bits!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    bits = None if w_bits is None else bits_pair("w_bits and a_bits", (w_bits, a_bits))
    return count(
        model,
        torch.zeros(batch_size, *input_shape),
        bits,
        cost_model,
        elementwise_bits,
        float_bits=float_bits,
        per_image=per_image,
    )


def sweep(
    models: Mapping[str, nn.Module],
    bit_widths: tuple[int, ...] = (1, 2, 4, 8),
    elementwise: tuple[str, ...] = ("float", "quantised"),
    float_bits: int = FLOAT_BITS,
) -> list[dict[str, Any]]:
    """Totals of each model with every conv/linear at ``(b, b)`` bits, element-wise operations in
    float (``float_bits``) or quantised to ``b`` bits too; one row per (model, b, element-wise)."""
    rows = []
    for name, model in models.items():
        x = example_input(model)
        for b in bit_widths:
            for mode in elementwise:
                if mode not in ("float", "quantised"):
                    raise ValueError(f"elementwise must hold 'float' or 'quantised', got {mode!r}")
                totals = count(
                    model,
                    x,
                    (b, b),
                    elementwise_bits=b if mode == "quantised" else None,
                    float_bits=float_bits,
                ).totals
                rows.append(
                    {
                        "model": name,
                        "bits": b,
                        "elementwise": mode,
                        **{
                            key: totals[key]
                            for key in ("macs", "ace", "sops", "acev2", "energy_pj")
                        },
                    }
                )
    return rows


def rank_correlations(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Spearman rank correlation of ACE and of ACEv2 with the 45 nm energy across ``rows``."""
    from scipy.stats import spearmanr

    energy = [row["energy_pj"] for row in rows]
    return {
        metric: float(spearmanr([row[metric] for row in rows], energy).statistic)
        for metric in ("ace", "acev2")
    }
