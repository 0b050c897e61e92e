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
from typing import cast

import torch
from torch import nn

from qatcore.bnn.functions import GRADIENT_FORMATS
from qatcore.bnn.layers import (
    BinaryLayer,
    MaxPool2d,
    RealLayer,
    ReLU,
    SignActivation,
    StemMaxPool2d,
)
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
    """The paper's memory-saving choices, and one of ours (``shared_moment``); all off is the standard algorithm,
    all on the low-memory one as ``qatcore.bnn`` trains it."""

    packed_inputs: bool = False  # binary layers keep sign(X) as 1 bit (the first layer keeps X)
    l1_batch_norm: bool = False  # keep sign(x̂) bits and per-channel mean|x̂|, σ instead of x̂
    bit_masks: bool = False  # STE and pooling masks as 1 bit instead of float32
    half_precision: bool = (
        False  # weights, gradients, Adam state and batch-norm parameters in float16
    )
    bit_weight_gradients: bool = False  # binary layers' dW kept as packed sign bits
    #: the binary weights' Adam ``v`` kept as the one value they share and the few that differ
    #: (``qatcore.bnn.shared_moment``; none differ at a model's first steps). Not the paper's: it keeps ``v`` per weight
    shared_moment: bool = False


STANDARD = Choices()
LOW_MEMORY = Choices(True, True, True, True, True, True)
#: the choices applied one after another, from the standard to the low-memory algorithm (the paper's, then ours)
WATERFALL = (
    ("standard", STANDARD),
    ("1-bit layer inputs", Choices(packed_inputs=True)),
    ("l1 batch norm", Choices(packed_inputs=True, l1_batch_norm=True)),
    ("1-bit masks", Choices(packed_inputs=True, l1_batch_norm=True, bit_masks=True)),
    ("float16 weights + state", Choices(True, True, True, True)),
    ("1-bit weight gradients", Choices(True, True, True, True, True)),
    ("one shared Adam v", LOW_MEMORY),
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
    kind: str  # "binary", "real", "batch_norm", "sign", "relu", "pool", "stem_pool", "loss"
    weights: int = 0
    channels: int = (
        0  # batch norm: its channels; binary and real layers: output channels; loss: classes
    )
    per_example: int = 0  # values of the input one example brings to this module
    binary_input: bool = True
    outputs: int = 0  # values of the output per example (weight layers and the stem's pool)
    bias: int = 0  # a real layer's bias values


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[LayerShape]:
    """The model's BNN modules in forward order, sized by one evaluation forward pass of one example."""
    shape = input_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("input_shape is needed for a model without an input_shape attribute")
    shapes: list[LayerShape] = []

    def record(name: str, module: nn.Module, inputs, output) -> None:
        n = inputs[0][0].numel()
        if isinstance(module, (BinaryLayer, RealLayer)):
            bias = cast("torch.Tensor | None", getattr(module, "bias", None))
            shapes.append(
                LayerShape(
                    name,
                    "binary" if isinstance(module, BinaryLayer) else "real",
                    module.weight.numel(),
                    channels=output.shape[1],
                    per_example=n,
                    binary_input=getattr(module, "binary_input", False),
                    outputs=output[0].numel(),
                    bias=0 if bias is None else bias.numel(),
                )
            )
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            shapes.append(
                LayerShape(name, "batch_norm", channels=module.num_features, per_example=n)
            )
        elif isinstance(module, SignActivation):
            shapes.append(LayerShape(name, "sign", per_example=n))
        elif isinstance(module, ReLU):
            shapes.append(LayerShape(name, "relu", per_example=n))
        elif isinstance(module, MaxPool2d):
            shapes.append(LayerShape(name, "pool", per_example=n))
        elif isinstance(module, StemMaxPool2d):
            shapes.append(LayerShape(name, "stem_pool", per_example=n, outputs=output[0].numel()))

    handles = [
        m.register_forward_hook(lambda m, i, o, name=name: record(name, m, i, o))
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
    slots = STATE_SLOTS[optimizer] * s.weights
    state_rows = [MemoryRow(s.name, state, "optimizer state", slots, bits)]
    if optimizer == "adam" and c.shared_moment:  # m per weight, v one value (none differ yet)
        state_rows = [
            MemoryRow(s.name, "Adam m", "optimizer state", s.weights, bits),
            MemoryRow(s.name, "Adam v (one shared value)", "optimizer state", 1, 16),
        ]
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
        *state_rows,
        MemoryRow(
            s.name,
            "X (layer input)" if x_bits == 32 else "sign(X) bits",
            "saved activations",
            s.per_example * b,
            x_bits,
            saved=True,
        ),
    ]


def _real_rows(s: LayerShape, b: int, c: Choices, optimizer: str) -> list[MemoryRow]:
    """A real-valued layer (ResNetE-18's first, last and shortcut layers): weights and bias, their gradients,
    the optimiser's state (Bop leaves them to Adam) and the saved input, float32 or float16."""
    bits, values = (16 if c.half_precision else 32), s.weights + s.bias
    slots, state = (1, "momentum") if optimizer == "sgd" else (2, "Adam m, v")
    return [
        MemoryRow(s.name, "W, b (real)", "weights", values, bits),
        MemoryRow(s.name, "dW, db", "weight gradients", values, bits),
        MemoryRow(s.name, state, "optimizer state", slots * values, bits),
        MemoryRow(s.name, "X (layer input)", "saved activations", s.per_example * b, bits, True),
    ]


def _stem_pool_rows(s: LayerShape, b: int, c: Choices) -> list[MemoryRow]:
    """The 3×3 stem max-pool: torch keeps its float32 input and int64 indices; the low-memory one a byte per
    output (where the maximum sits in its window)."""
    if c.bit_masks:
        return [MemoryRow(s.name, "argmax in window (uint8)", "masks", s.outputs * b, 8, True)]
    return [
        MemoryRow(s.name, "X (pool input)", "masks", s.per_example * b, 32, True),
        MemoryRow(s.name, "argmax indices (int64)", "masks", s.outputs * b, 64, True),
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


def _shapes_of(model: nn.Module | None, shapes: list[LayerShape] | None) -> list[LayerShape]:
    """``shapes`` when given, else ``model``'s ``layer_shapes``."""
    if shapes is not None:
        return shapes
    if model is None:
        raise ValueError("give the model or its layer_shapes")
    return layer_shapes(model)


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
    for s in _shapes_of(model, shapes):
        if s.kind == "binary":
            rows += _binary_rows(s, b, choices, optimizer)
        elif s.kind == "real":
            rows += _real_rows(s, b, choices, optimizer)
        elif s.kind == "stem_pool":
            rows += _stem_pool_rows(s, b, choices)
        elif s.kind == "relu":
            rows.append(
                MemoryRow(s.name, "ReLU mask 1[x > 0]", "masks", s.per_example * b, mask_bits, True)
            )
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


#: the ResNetE-18 tab of the same spreadsheet, at its batch size (cell L2): the "Overall Total (MB)" column
#: (AI48–AI54), standard ("BNN") and proposed ("Ours"), per optimiser, as the sheet stores them
AUTHORS_SHEET_RESNETE18_BATCH = 4096
AUTHORS_SHEET_RESNETE18 = {
    ("standard", "sgd"): 59190.051666259766,
    ("standard", "adam"): 59234.60317993164,
    ("standard", "bop"): 59145.50015258789,
    ("low_memory", "sgd"): 18960.757278442383,
    ("low_memory", "adam"): 18983.03303527832,
    ("low_memory", "bop"): 18938.481521606445,
}
#: paper 3's abstract (ACM TECS 2023): "from-scratch ImageNet training of binarized ResNet-18, achieving a
#: 3.78× memory reduction"; the authors' README lists the same 3.78× as the "modelled memory footprint
#: savings" of ResNetE-18 at batch 4096
ABSTRACT_RESNETE18_SAVING = 3.78
README_RESNETE18_BATCH = 4096


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

    A model with real-valued layers (ResNetE-18) gets the rows of the sheet's ResNetE-18 tab instead
    (``_authors_resnete_rows``).
    """
    b = int_at_least("batch_size", batch_size, 1)
    low = check_choice("mode", mode, MODES) == "low_memory"
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("gradient", gradient, GRADIENT_FORMATS)
    shapes = _shapes_of(model, shapes)
    if any(s.kind == "real" for s in shapes):
        return _authors_resnete_rows(shapes, b, low, optimizer, gradient)
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


def _authors_resnete_rows(
    shapes: list[LayerShape], b: int, low: bool, optimizer: str, gradient: str
) -> list[MemoryRow]:
    """The rows of the sheet's ResNetE-18 tab, one per column, standard ("BNN") → proposed ("Ours") bits.

    Model: all weights (none for Bop) and one bias per output channel of every weight layer, 32 → 16.
    Optimiser: the binary layers' weight gradients 32 → 1, the real layers' 32 → 16, one state slot of
    every weight for every optimiser and a second for Adam, 32 → 16. Activations: the binary layers'
    inputs at 1 bit in both columns; their outputs 32 → 1 (the l1 batch norm's signs); the shortcut
    layers' inputs and outputs, and the first and last layers' inputs and outputs, 32 → 16; one
    input-gradient buffer of the largest layer input, 32 → 16; one output-gradient buffer, the larger
    of the largest binary-layer output at the ``gradient`` width (32 in the standard column) and the
    largest real-layer output at 32 → 16.
    """
    layers = [s for s in shapes if s.kind in ("binary", "real")]
    binary = [s for s in layers if s.kind == "binary"]
    edges = [layers[0], layers[-1]]
    shortcuts = [s for s in layers[1:-1] if s.kind == "real"]
    weights = sum(s.weights for s in layers)
    word = 16 if low else 32
    real_out = max(s.outputs for s in layers if s.kind == "real")
    binary_out = max(s.outputs for s in binary)
    out_bits = (GRADIENT_BITS[gradient] if low else 32, word)
    out_values, out_width = max(
        (binary_out * b, out_bits[0]), (real_out * b, out_bits[1]), key=lambda vb: vb[0] * vb[1]
    )
    rows = [
        MemoryRow("model", "weights", "weights", 0 if optimizer == "bop" else weights, word),
        MemoryRow("model", "bias", "batch norm", sum(s.channels for s in layers), word),
        MemoryRow(
            "optimiser",
            "binary weight gradient",
            "weight gradients",
            sum(s.weights for s in binary),
            1 if low else 32,
        ),
        MemoryRow(
            "optimiser",
            "weight gradient",
            "weight gradients",
            sum(s.weights for s in layers if s.kind == "real"),
            word,
        ),
    ]
    rows += [  # the tab keeps a second slot for every optimiser, empty but for Adam
        MemoryRow("optimiser", "momentum 1", "optimizer state", weights, word),
        MemoryRow(
            "optimiser", "momentum 2", "optimizer state", weights * (optimizer == "adam"), word
        ),
    ]
    saved = (
        ("binary activation in", sum(s.per_example for s in binary), 1),
        ("binary activation out", sum(s.outputs for s in binary), 1 if low else 32),
        ("non-binary activations", sum(s.per_example + s.outputs for s in shortcuts), word),
        ("first/last layer activations", sum(s.per_example + s.outputs for s in edges), word),
    )
    rows += [
        MemoryRow("activation", name, "saved activations", n * b, bits, saved=True)
        for name, n, bits in saved
    ]
    return rows + [
        MemoryRow(
            "activation",
            "activation gradient in",
            "gradient buffers",
            max(s.per_example for s in layers) * b,
            word,
        ),
        MemoryRow(
            "activation", "activation gradient out", "gradient buffers", out_values, out_width
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
    """Total bytes after each choice in turn (``WATERFALL``)."""
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
    "ABSTRACT_RESNETE18_SAVING",
    "AUTHORS_SHEET_BINARYNET",
    "AUTHORS_SHEET_RESNETE18",
    "AUTHORS_SHEET_RESNETE18_BATCH",
    "README_RESNETE18_BATCH",
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
