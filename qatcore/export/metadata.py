"""The facts written beside each export: bit widths, ACEv2, accuracy, file sizes, parity."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: an export matches PyTorch when no output differs by more than one step of an 8-bit quantiser
#: spanning the PyTorch outputs' range, and every prediction is the same
OUTPUT_STEP_BITS = 8


@dataclass(frozen=True)
class Parity:
    """How closely an export's outputs follow PyTorch's on the same examples."""

    max_abs_diff: float
    output_step: float
    prediction_agreement: float
    examples: int
    #: below 1: an export that re-quantizes (the 8-bit QDQ variant) is held to this agreement only
    required_agreement: float = 1.0

    @property
    def within_step(self) -> bool:
        return self.max_abs_diff <= self.output_step

    @property
    def ok(self) -> bool:
        """Within one output quantisation step, and identical predictions (or, for an export that
        re-quantizes, at least ``required_agreement`` of the predictions the same)."""
        if self.required_agreement < 1.0:
            return self.prediction_agreement >= self.required_agreement
        return self.within_step and self.prediction_agreement == 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_step": self.within_step, "ok": self.ok}


def parity(reference: np.ndarray, exported: np.ndarray, required_agreement: float = 1.0) -> Parity:
    """Compare the export's outputs with PyTorch's (both N×classes)."""
    reference, exported = np.asarray(reference, np.float64), np.asarray(exported, np.float64)
    if reference.shape != exported.shape:
        raise ValueError(
            f"outputs differ in shape: PyTorch {reference.shape}, export {exported.shape}"
        )
    span = float(reference.max() - reference.min()) if reference.size else 0.0
    diff = float(np.abs(reference - exported).max()) if reference.size else 0.0
    agree = float((reference.argmax(1) == exported.argmax(1)).mean()) if reference.size else 1.0
    return Parity(diff, span / (2**OUTPUT_STEP_BITS - 1), agree, len(reference), required_agreement)


def accuracy(outputs: np.ndarray, labels: torch.Tensor | np.ndarray | None) -> float | None:
    """Fraction of arg-max predictions equal to ``labels`` (None without labels)."""
    if labels is None:
        return None
    return float((np.asarray(outputs).argmax(1) == np.asarray(labels)).mean())


def ace(model: nn.Module, example: torch.Tensor) -> dict[str, Any] | None:
    """ACEv2 of the model from ``qatcore.cost.ace`` when that module exists, else None."""
    if importlib.util.find_spec("qatcore.cost.ace") is None:
        return None
    from qatcore.cost import ace as ace_module

    try:
        # float operands priced as float32, as the exported graph computes them (ace.count's default is bfloat16)
        report = ace_module.count(
            model, example, bits=None, cost_model="acev2", float_bits=32
        ).to_dict()
    except (ValueError, TypeError, NotImplementedError) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    return {key: value for key, value in report.items() if key != "layers"}  # the totals


def ratio(float_size: int | None, size: int) -> float | None:
    """How many times smaller than float32 the export is."""
    return None if not float_size or not size else round(float_size / size, 3)


def clean(value: Any) -> Any:
    """``value`` with NumPy scalars and non-finite floats made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
