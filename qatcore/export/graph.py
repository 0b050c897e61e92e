"""A model as a flat list of exportable operations, the one description every exporter reads.

``lower(model)`` walks ``nn.Sequential`` containers in order and turns each leaf module into an
``Op``: its kind, its name in the model, plain attributes and NumPy parameters. Matching is
exact: a module is lowered only if its own type has a lowering, so a subclass of ``nn.Conv2d``
(say a foreign quantized conv) is refused rather than exported as a float conv. Quantized
weights are kept as integers: a b-bit weight ``Q(w) = Δ·code − m`` as the odd integers
``q = 2·code − (2^b − 1)`` with scale ``Δ/2`` (so ``Q(w) = (Δ/2)·q`` exactly, no zero point);
a binary weight as ``±1`` with per-output-channel scale. A module no exporter can express raises
``UnsupportedLayerError`` naming it.

Beyond chains: a residual block of ``qatcore.architectures`` (``BasicBlock``, ``Bottleneck``:
``relu(body(x) + shortcut(x))``) lowers to one ``residual`` op holding its two branches' ops, then a
ReLU; the course's ``ResNet`` and ``MobileNetV1`` lower through their known forward (stem/stages or
features, global average pool, flatten, fc). ``flat(ops)`` lists every op, branches included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from qatcore.architectures import BasicBlock, Bottleneck, MobileNetV1, ResNet
from qatcore.estimators.layers import QuantConv2d, QuantLinear
from qatcore.export import binary, pikelpn
from qatcore.export.ops import (
    Op,
    UnsupportedLayerError,
    Weight,
    conv_op,
    float_weight,
    pair,
    to_numpy,
    uniform_weight,
)


def _pool(name: str, module: nn.Module) -> Op:
    kernel = pair(module.kernel_size)
    stride = kernel if module.stride is None else pair(module.stride)
    attrs = dict(
        kernel=kernel, stride=stride, padding=pair(module.padding), ceil_mode=bool(module.ceil_mode)
    )
    if isinstance(module, nn.MaxPool2d):
        if pair(module.dilation) != [1, 1]:
            raise UnsupportedLayerError(f"cannot export layer {name!r} (MaxPool2d): dilation > 1")
        return Op("maxpool", name, attrs)
    if module.divisor_override is not None:
        raise UnsupportedLayerError(f"cannot export layer {name!r} (AvgPool2d): divisor_override")
    return Op("avgpool", name, {**attrs, "count_include_pad": bool(module.count_include_pad)})


def _batchnorm(name: str, module: nn.modules.batchnorm._BatchNorm) -> Op:
    if module.running_mean is None:
        raise UnsupportedLayerError(
            f"cannot export layer {name!r} ({type(module).__name__}): no running statistics"
        )
    channels = module.num_features
    gamma = to_numpy(module.weight) if module.affine else np.ones(channels, np.float32)
    beta = to_numpy(module.bias) if module.affine else np.zeros(channels, np.float32)
    attrs = dict(
        eps=float(module.eps),
        mean=to_numpy(module.running_mean),
        var=to_numpy(module.running_var),
        gamma=gamma,
        beta=beta,
    )
    return Op("batchnorm", name, attrs)


def _flatten(name: str, module: nn.Flatten) -> Op:
    if module.start_dim != 1 or module.end_dim != -1:
        raise UnsupportedLayerError(
            f"cannot export layer {name!r} (Flatten): only start_dim=1, end_dim=-1"
        )
    return Op("flatten", name)


def _hardtanh(name: str, module: nn.Hardtanh) -> Op:
    return Op("hardtanh", name, dict(min=float(module.min_val), max=float(module.max_val)))


def _residual(name: str, module: BasicBlock | Bottleneck) -> list[Op]:
    """``relu(body(x) + shortcut(x))``: one residual op with both branches, then the ReLU."""
    branches = {
        branch: _lower(getattr(module, branch), f"{name}.{branch}")
        for branch in ("body", "shortcut")
    }
    return [Op("residual", name, branches), Op("relu", f"{name}.relu")]


def _classifier(*trunk: str):
    """The lowering of a course classifier whose forward is ``fc(flatten(pool(trunk…(x))))``."""

    def lowering(name: str, module: nn.Module) -> list[Op]:
        prefix = f"{name}." if name != type(module).__name__ else ""
        ops = [op for part in trunk for op in _lower(getattr(module, part), prefix + part)]
        ops += _lower(module.get_submodule("pool"), prefix + "pool")
        ops += [Op("flatten", prefix + "flatten")]
        return ops + _lower(module.get_submodule("fc"), prefix + "fc")

    return lowering


#: module type → lowering, matched on the exact type (``type(module) is kind``); the binary and
#: PikeLPN layers bring their own (``binary.LOWERINGS``, ``pikelpn.LOWERINGS``).
LOWERINGS: list[tuple[type, Callable[[str, Any], Op | list[Op] | None]]] = [
    *binary.LOWERINGS,
    *pikelpn.LOWERINGS,
    (QuantConv2d, lambda n, mod: conv_op(n, mod, uniform_weight(mod))),
    (QuantLinear, lambda n, mod: Op("linear", n, {}, uniform_weight(mod), to_numpy(mod.bias))),
    (nn.Conv2d, lambda n, mod: conv_op(n, mod, float_weight(mod.weight))),
    (nn.Linear, lambda n, mod: Op("linear", n, {}, float_weight(mod.weight), to_numpy(mod.bias))),
    (nn.ReLU, lambda n, mod: Op("relu", n)),
    (nn.AvgPool2d, _pool),
    (nn.MaxPool2d, _pool),
    (nn.Flatten, _flatten),
    (nn.BatchNorm1d, _batchnorm),
    (nn.BatchNorm2d, _batchnorm),
    (nn.Hardtanh, _hardtanh),
    (nn.SiLU, lambda n, mod: Op("silu", n)),
    (nn.Hardswish, lambda n, mod: Op("hardswish", n)),
    (BasicBlock, _residual),
    (Bottleneck, _residual),
    (ResNet, _classifier("stem", "stages")),
    (MobileNetV1, _classifier("features")),
    (nn.Dropout, lambda n, mod: None),
    (nn.Identity, lambda n, mod: None),
]
LOWERINGS += [
    (kind, next(fn for k, fn in LOWERINGS if k is standard))
    for kind, standard in binary.SAME_IN_EVAL
]


def supported() -> list[str]:
    """Names of the module types the exporters take."""
    return sorted({kind.__name__ for kind, _ in LOWERINGS})


def is_chain(model: nn.Module) -> bool:
    """An ``nn.Sequential`` (or a subclass that keeps its forward, or says that its own forward runs the children in
    order outside training: ``runs_children_in_order``): its children run in order."""
    if not isinstance(model, nn.Sequential):
        return False
    return type(model).forward is nn.Sequential.forward or bool(
        getattr(type(model), "runs_children_in_order", False)
    )


def leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model's modules in execution order, looking inside ``nn.Sequential`` chains only."""
    if is_chain(model):
        return [
            pair
            for name, child in model.named_children()
            for pair in leaves(child, f"{prefix}.{name}" if prefix else name)
        ]
    return [(prefix or type(model).__name__, model)]


def lower(model: nn.Module) -> list[Op]:
    """The model (in eval mode) as a list of ops; ``UnsupportedLayerError`` names a layer it cannot express."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return binary.drop_repeated_signs(_lower(model))


def _lower(model: nn.Module, prefix: str = "") -> list[Op]:
    allowed = supported()
    ops: list[Op] = []
    for name, module in leaves(model, prefix):
        lowering = next((fn for kind, fn in LOWERINGS if type(module) is kind), None)
        if lowering is None:
            known = next((kind for kind, _ in LOWERINGS if isinstance(module, kind)), None)
            why = (
                "no lowering"
                if known is None
                else (
                    f"a subclass of {known.__module__}.{known.__qualname__}, which may compute something else"
                )
            )
            raise UnsupportedLayerError(
                f"cannot export layer {name!r} ({type(module).__qualname__}): {why}; "
                f"the exporters take nn.Sequential chains of exactly {allowed}"
            )
        result = lowering(name, module)
        ops.extend([] if result is None else result if isinstance(result, list) else [result])
    return ops


def flat(ops: list[Op]) -> list[Op]:
    """Every op, those inside residual branches included, in order."""
    found = []
    for op in ops:
        found.append(op)
        if op.kind == "residual":
            found += flat(op.attrs["body"]) + flat(op.attrs["shortcut"])
    return found


def as_float(ops: list[Op]) -> list[Op]:
    """The same ops with every weight dequantized to float32: the float baseline of a file size."""
    found = []
    for op in ops:
        if op.kind == "residual":
            op = replace(op, attrs={key: as_float(branch) for key, branch in op.attrs.items()})
        elif op.weight is not None and op.weight.kind != "float":
            op = replace(op, weight=Weight("float", op.weight.dequantized().astype(np.float32)))
        found.append(op)
    return found


def weight_bits(ops: list[Op]) -> dict[str, int]:
    """Bit width of every weighted op's weight, by layer name (32 for float)."""
    return {op.name: op.weight.bits for op in flat(ops) if op.weight is not None}
