"""The analytic memory model of BNN training: every variable a training step holds, per layer.

What one step holds between the forward pass and the optimiser update, for any batch size ``B``:
the latent weights, their gradients, Adam's ``m`` and ``v``, what each layer keeps for its
backward pass (binary layer inputs, batch-norm state, STE and pooling masks) and the loss's saved
log-probabilities and labels. The standard algorithm keeps all of it in float32; the paper's
choices (``Choices``) each shrink one part. Sizes come from the model's real layer shapes, read by
one forward pass; the variables are exactly those ``qatcore.bnn.functions`` and torch's batch norm
save, so ``qatcore.bnn.measure`` can check the model against a real step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qatcore.bnn.functions import GRADIENT_FORMATS
from qatcore.bnn.layers import BinaryLayer, MaxPool2d, SignActivation
from qatcore.bnn.models import MODES
from qatcore.bnn.optim import OPTIMIZERS
from qatcore.bnn.packing import packed_size
from qatcore.checks import check_choice, int_at_least

KINDS = (
    "weights",
    "weight gradients",
    "optimizer state",
    "saved activations",
    "masks",
    "batch norm",
    "loss",
    "gradient buffers",
)
ACCOUNTINGS = ("authors", "autograd")
#: state slots per weight: SGD with momentum one, Adam two (m, v), Bop one (the gradients' moving average)
STATE_SLOTS = {"sgd": 1, "adam": 2, "bop": 1}
#: bits of the second activation-gradient buffer in the authors' proposed column: the power-of-two
#: step (sign + 4-bit exponent) or the final code's float16
GRADIENT_BITS = {"po2": 5, "float16": 16}


@dataclass(frozen=True)
class Choices:
    """The paper's memory-saving choices; all off is the standard algorithm, all on the low-memory one."""

    packed_inputs: bool = False  # binary layers keep sign(X) as 1 bit (the first layer keeps X)
    l1_batch_norm: bool = False  # keep sign(x̂) bits and per-channel mean|x̂|, σ instead of x̂
    bit_masks: bool = False  # STE and pooling masks as 1 bit instead of float32
    half_precision: bool = (
        False  # weights, gradients, Adam state and batch-norm parameters in float16
    )
    bit_weight_gradients: bool = False  # binary layers' dW kept as packed sign bits


STANDARD = Choices()
LOW_MEMORY = Choices(True, True, True, True, True)
#: the paper's choices applied one after another, from the standard to the low-memory algorithm
WATERFALL = (
    ("standard", STANDARD),
    ("1-bit layer inputs", Choices(packed_inputs=True)),
    ("l1 batch norm", Choices(packed_inputs=True, l1_batch_norm=True)),
    ("1-bit masks", Choices(packed_inputs=True, l1_batch_norm=True, bit_masks=True)),
    ("float16 weights + state", Choices(True, True, True, True)),
    ("1-bit weight gradients", LOW_MEMORY),
)


def choices_for(mode: str) -> Choices:
    """``STANDARD`` or ``LOW_MEMORY`` for a training mode name."""
    return LOW_MEMORY if check_choice("mode", mode, MODES) == "low_memory" else STANDARD


@dataclass(frozen=True)
class MemoryRow:
    """One variable of one layer: how many values, at how many bits, in how many bytes."""

    layer: str
    variable: str
    kind: str
    values: int
    bits: int
    saved: bool = False  # kept by autograd for the backward pass (the rest: parameters and state)

    @property
    def bytes(self) -> int:
        return packed_size(self.values) if self.bits == 1 else self.values * self.bits // 8


@dataclass(frozen=True)
class LayerShape:
    """What the model needs of one module: its kind, weight count, channels and per-example sizes."""

    name: str
    kind: str  # "binary", "batch_norm", "sign", "pool", "loss"
    weights: int = 0
    channels: int = 0
    per_example: int = 0  # values of the input one example brings to this module
    binary_input: bool = True


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[LayerShape]:
    """The model's BNN modules in forward order, sized by one evaluation forward pass of one example."""
    shape = input_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("input_shape is needed for a model without an input_shape attribute")
    shapes: list[LayerShape] = []

    def record(name: str, module: nn.Module, inputs) -> None:
        n = inputs[0][0].numel()
        if isinstance(module, BinaryLayer):
            shapes.append(
                LayerShape(
                    name,
                    "binary",
                    module.weight.numel(),
                    per_example=n,
                    binary_input=module.binary_input,
                )
            )
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            shapes.append(
                LayerShape(name, "batch_norm", channels=module.num_features, per_example=n)
            )
        elif isinstance(module, SignActivation):
            shapes.append(LayerShape(name, "sign", per_example=n))
        elif isinstance(module, MaxPool2d):
            shapes.append(LayerShape(name, "pool", per_example=n))

    handles = [
        m.register_forward_pre_hook(lambda m, i, name=name: record(name, m, i))
        for name, m in model.named_modules()
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros((1, *shape)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return shapes + [LayerShape("loss", "loss", channels=out.shape[1])]


def _binary_rows(s: LayerShape, b: int, c: Choices, optimizer: str) -> list[MemoryRow]:
    bits = 16 if c.half_precision else 32
    x_bits = 1 if c.packed_inputs and s.binary_input else 32
    state = {"sgd": "momentum", "adam": "Adam m, v", "bop": "Bop m"}[optimizer]
    return [
        MemoryRow(
            s.name,
            "W (latent weights)" if optimizer != "bop" else "W (±1 weights)",
            "weights",
            s.weights,
            bits,
        ),
        MemoryRow(
            s.name,
            "dW" if not c.bit_weight_gradients else "sign(dW) bits",
            "weight gradients",
            s.weights,
            1 if c.bit_weight_gradients else bits,
        ),
        MemoryRow(s.name, state, "optimizer state", STATE_SLOTS[optimizer] * s.weights, bits),
        MemoryRow(
            s.name,
            "X (layer input)" if x_bits == 32 else "sign(X) bits",
            "saved activations",
            s.per_example * b,
            x_bits,
            saved=True,
        ),
    ]


def _batch_norm_rows(s: LayerShape, b: int, c: Choices, optimizer: str) -> list[MemoryRow]:
    bits, ch = (16 if c.half_precision else 32), s.channels
    slots, state = (
        (1, "momentum") if optimizer == "sgd" else (2, "Adam m, v")
    )  # Bop leaves β to Adam
    rows = [
        MemoryRow(s.name, "γ, β", "batch norm", 2 * ch, bits),
        MemoryRow(s.name, "running μ, σ²", "batch norm", 2 * ch, bits),
    ]
    if c.l1_batch_norm:  # γ is fixed at 1: only β is trained
        return rows + [
            MemoryRow(s.name, "dβ", "batch norm", ch, bits),
            MemoryRow(s.name, f"{state} of β", "batch norm", slots * ch, bits),
            MemoryRow(s.name, "sign(x̂) bits", "batch norm", s.per_example * b, 1, saved=True),
            MemoryRow(s.name, "mean|x̂|, σ", "batch norm", 2 * ch, 16, saved=True),
        ]
    return rows + [
        MemoryRow(s.name, "dγ, dβ", "batch norm", 2 * ch, bits),
        MemoryRow(s.name, f"{state} of γ, β", "batch norm", 2 * slots * ch, bits),
        MemoryRow(
            s.name, "x̂ (torch keeps x, same size)", "batch norm", s.per_example * b, 32, saved=True
        ),
        MemoryRow(s.name, "μ, 1/σ", "batch norm", 2 * ch, 32, saved=True),
    ]


def memory_rows(
    model: nn.Module | None,
    batch_size: int,
    choices: Choices = STANDARD,
    shapes: list[LayerShape] | None = None,
    optimizer: str = "adam",
) -> list[MemoryRow]:
    """Every variable autograd holds in a training step of ``model`` at ``batch_size`` under ``choices``
    with ``optimizer`` (``model`` may be None when its ``layer_shapes`` are given)."""
    b = int_at_least("batch_size", batch_size, 1)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    mask_bits = 1 if choices.bit_masks else 32
    rows: list[MemoryRow] = []
    for s in shapes if shapes is not None else layer_shapes(model):
        if s.kind == "binary":
            rows += _binary_rows(s, b, choices, optimizer)
        elif s.kind == "batch_norm":
            rows += _batch_norm_rows(s, b, choices, optimizer)
        elif s.kind == "sign":
            rows.append(
                MemoryRow(
                    s.name, "STE mask 1[|x| ≤ 1]", "masks", s.per_example * b, mask_bits, True
                )
            )
        elif s.kind == "pool":
            rows.append(
                MemoryRow(
                    s.name, "pooling switch mask", "masks", s.per_example * b, mask_bits, True
                )
            )
        else:
            rows += [
                MemoryRow(s.name, "log-softmax", "loss", s.channels * b, 32, True),
                MemoryRow(s.name, "labels (int64)", "loss", b, 64, True),
            ]
    return rows


#: the authors' spreadsheet groups its rows into three totals, in MiB (bytes / 1024 / 1024)
SHEET_GROUPS = ("model", "optimiser", "activation")

#: the BinaryNet sheet of the authors' ``memory_estimation/memory_estimation.xlsx`` (repository
#: awai54st/Enabling-Binary-Neural-Network-Training-on-the-Edge, commit 2bee19b, the parent of the
#: commit that deleted it), batch 100: its "Overall Total (MB)" column, standard ("BNN") and
#: proposed ("Ours"), per optimiser, as the sheet stores them
AUTHORS_SHEET_BINARYNET = {
    ("standard", "sgd"): 371.81586456298828,
    ("standard", "adam"): 425.30561065673828,
    ("standard", "bop"): 318.32611846923828,
    ("low_memory", "sgd"): 91.460267066955566,
    ("low_memory", "adam"): 118.20514011383057,
    ("low_memory", "bop"): 64.715394020080566,
}


def authors_rows(
    model: nn.Module | None,
    batch_size: int,
    mode: str = "standard",
    optimizer: str = "adam",
    gradient: str = "po2",
    shapes: list[LayerShape] | None = None,
) -> list[MemoryRow]:
    """The authors' memory model (their ``memory_estimation.xlsx``): exactly its rows and bit widths.

    Standard → proposed bits: weights 32 → 16 (none for Bop, which the sheet counts as latent-free),
    per-channel β 32 → 16, weight gradients 32 → 1, each optimiser slot 32 → 16, the saved activations
    (every weight layer's input, the first included, and the network output) 32 → 1, and two
    activation-gradient buffers of the largest of those sizes, 32 + 32 → 16 + 5 (``gradient="po2"``)
    or 16 + 16 (``"float16"``). Each row's ``layer`` is its sheet group (``SHEET_GROUPS``).
    """
    b = int_at_least("batch_size", batch_size, 1)
    low = check_choice("mode", mode, MODES) == "low_memory"
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("gradient", gradient, GRADIENT_FORMATS)
    shapes = shapes if shapes is not None else layer_shapes(model)
    binary = [s for s in shapes if s.kind == "binary"]
    weights = sum(s.weights for s in binary)
    activations = [s.per_example * b for s in binary] + [
        s.channels * b for s in shapes if s.kind == "loss"
    ]
    word = 16 if low else 32
    rows = [
        MemoryRow("model", "weights", "weights", 0 if optimizer == "bop" else weights, word),
        MemoryRow(
            "model",
            "bias (per-channel β)",
            "batch norm",
            sum(s.channels for s in shapes if s.kind == "batch_norm"),
            word,
        ),
        MemoryRow("optimiser", "weight gradient", "weight gradients", weights, 1 if low else 32),
    ]
    rows += [
        MemoryRow("optimiser", f"momentum {i + 1}", "optimizer state", weights, word)
        for i in range(STATE_SLOTS[optimizer])
    ]
    return rows + [
        MemoryRow(
            "activation",
            "activation",
            "saved activations",
            sum(activations),
            1 if low else 32,
            saved=True,
        ),
        MemoryRow(
            "activation", "activation gradient 1", "gradient buffers", max(activations), word
        ),
        MemoryRow(
            "activation",
            "activation gradient 2",
            "gradient buffers",
            max(activations),
            GRADIENT_BITS[gradient] if low else 32,
        ),
    ]


def sheet_mib(rows: list[MemoryRow]) -> dict[str, float]:
    """The sheet's totals of ``authors_rows``: MiB per group and ``"total"``, as ``bits / 8 / 1024 / 1024``."""
    groups = {
        g: sum(r.values * r.bits for r in rows if r.layer == g) / 8 / 1024 / 1024
        for g in SHEET_GROUPS
    }
    return {**groups, "total": groups["model"] + groups["optimiser"] + groups["activation"]}


def accounting_rows(
    model: nn.Module | None,
    batch_size: int,
    mode: str = "standard",
    *,
    accounting: str = "autograd",
    optimizer: str = "adam",
    gradient: str = "po2",
    shapes: list[LayerShape] | None = None,
) -> list[MemoryRow]:
    """``authors_rows`` (``accounting="authors"``) or what autograd holds (``"autograd"``, ``memory_rows``)."""
    if check_choice("accounting", accounting, ACCOUNTINGS) == "authors":
        return authors_rows(model, batch_size, mode, optimizer, gradient, shapes)
    check_choice(
        "gradient", gradient, GRADIENT_FORMATS
    )  # autograd holds no dY buffer between steps
    return memory_rows(model, batch_size, choices_for(mode), shapes, optimizer)


def total_bytes(rows: list[MemoryRow]) -> int:
    """Sum of the rows' bytes."""
    return sum(row.bytes for row in rows)


def bytes_by_kind(rows: list[MemoryRow]) -> dict[str, int]:
    """Bytes per kind of variable, in ``KINDS`` order."""
    return {kind: sum(r.bytes for r in rows if r.kind == kind) for kind in KINDS}


def compare_modes(model: nn.Module, batch_size: int) -> dict[str, float]:
    """``standard_bytes``, ``low_memory_bytes`` and their ``ratio`` (standard / low-memory)."""
    shapes = layer_shapes(model)
    standard = total_bytes(memory_rows(model, batch_size, STANDARD, shapes))
    low = total_bytes(memory_rows(model, batch_size, LOW_MEMORY, shapes))
    return {"standard_bytes": standard, "low_memory_bytes": low, "ratio": standard / low}


def waterfall(model: nn.Module, batch_size: int) -> list[tuple[str, int]]:
    """Total bytes after each of the paper's choices in turn (``WATERFALL``)."""
    shapes = layer_shapes(model)
    return [
        (label, total_bytes(memory_rows(model, batch_size, c, shapes))) for label, c in WATERFALL
    ]


def memory_table(rows: list[MemoryRow]) -> str:
    """A markdown table of the rows and their total."""
    lines = ["| layer | variable | values | bits | bytes |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r.layer} | {r.variable} | {r.values} | {r.bits} | {r.bytes} |" for r in rows]
    lines.append(f"| **total** | | | | **{total_bytes(rows)}** |")
    return "\n".join(lines)


__all__ = [
    "ACCOUNTINGS",
    "AUTHORS_SHEET_BINARYNET",
    "GRADIENT_BITS",
    "GRADIENT_FORMATS",
    "OPTIMIZERS",
    "SHEET_GROUPS",
    "STATE_SLOTS",
    "Choices",
    "KINDS",
    "accounting_rows",
    "authors_rows",
    "sheet_mib",
    "LOW_MEMORY",
    "STANDARD",
    "WATERFALL",
    "MemoryRow",
    "compare_modes",
    "bytes_by_kind",
    "choices_for",
    "layer_shapes",
    "memory_rows",
    "memory_table",
    "total_bytes",
    "waterfall",
]
