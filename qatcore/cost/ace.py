"""ACE and ACEv2 accounting for any ``nn.Module``: every arithmetic operation with its bit widths.

``count(model, example_input, bits=None, cost_model="acev2", elementwise_bits=None)`` runs the
model once on ``example_input`` (eval mode, no gradients), traced with ``torch.fx`` or, where
tracing fails, with module hooks plus a ``TorchFunctionMode``, and returns an ``AceReport``:
totals (MACs, ACE, ACEv2, energy in pJ), a per-layer table, a breakdown by operation kind,
``.to_markdown()`` and ``.to_dict()``. Counts are for the whole example input (batch included).
An operation it cannot cost is listed in ``report.unknown``, never silently dropped.

**Operations** (``qatcore.cost.cost_models.Operation(layer, kind, count, bits, role="")``): kinds
``"mac"`` (conv, grouped and depthwise conv, linear, matmul; bits ``(w_bits, a_bits)``),
``"mul"``, ``"div"``, ``"add"``, ``"shift"``, ``"compare"``, ``"exp"``. What is counted per element:
batch norm (inference form, folded to ``s·x + t``): 1 mul + 1 add; ReLU 1 compare; ReLU6 and
Hardtanh 2 compares; PReLU and LeakyReLU 1 compare + 1 mul; Hardswish 1 add + 2 compares +
2 mul; Sigmoid 1 exp + 1 add + 1 div; Softmax 1 compare + 2 add + 1 exp + 1 div; residual and
other additions 1 add; max pooling ``window − 1`` compares per output; average pooling
``window − 1`` adds + 1 mul per output. A conv/linear layer with quantised weights re-scales each
output (1 mul, role "rescale"); with quantised inputs it scales each input onto its grid (1 mul,
role "quantise"). Conv/linear bias: 1 add per output.

**Precision of a conv/linear**, first that applies: (1) ``bits`` — a pair ``(w_bits, a_bits)`` for
every such layer, or a map ``{"layer.name": (w_bits, a_bits)}``; (2) the module's ``weight_bits``
/ ``input_bits`` attributes; (3) ``module.bits`` of a ``qatcore.estimators.layers.QuantizedWeight``
(weights); (4) float, 32 bits. Element-wise operations run at ``elementwise_bits`` (default 32,
float). A width of 32 means float32.

**Hook**: a module that defines ``ace_operations(self, inputs, output, name) -> list[Operation]``
is costed by that method alone, not traced into.

The reading of ACE, ACEv2 and the energy table is stated in ``qatcore.cost.cost_models``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

from qatcore.cost import cost_models
from qatcore.cost.cost_models import FLOAT_BITS, AceReport, CostModel, Operation
from qatcore.estimators.layers import QuantizedWeight

__all__ = ["AceReport", "Operation", "count", "example_input"]

# per element of the output: (kind, how many) — see the module docstring
RECIPES: dict[str, tuple[tuple[str, int], ...]] = {
    "relu": (("compare", 1),),
    "relu6": (("compare", 2),),
    "hardtanh": (("compare", 2),),
    "leaky_relu": (("compare", 1), ("mul", 1)),
    "prelu": (("compare", 1), ("mul", 1)),
    "hardsigmoid": (("add", 1), ("compare", 2), ("mul", 1)),
    "hardswish": (("add", 1), ("compare", 2), ("mul", 2)),
    "sigmoid": (("exp", 1), ("add", 1), ("div", 1)),
    "tanh": (("exp", 1), ("add", 2), ("div", 1)),
    "silu": (("exp", 1), ("add", 1), ("div", 1), ("mul", 1)),
    "softmax": (("compare", 1), ("add", 2), ("exp", 1), ("div", 1)),
    "batch_norm": (("mul", 1), ("add", 1)),
    "add": (("add", 1),), "iadd": (("add", 1),), "radd": (("add", 1),),
    "sub": (("add", 1),), "isub": (("add", 1),), "rsub": (("add", 1),),
    "mul": (("mul", 1),), "imul": (("mul", 1),), "rmul": (("mul", 1),),
    "div": (("div", 1),), "truediv": (("div", 1),), "itruediv": (("div", 1),),
}
ROLES = {"batch_norm": "batch norm", "prelu": "activation", "leaky_relu": "activation",
         "softmax": "softmax", "mul": "scale", "div": "scale"}
MACS = ("conv", "linear", "matmul", "mm", "bmm", "rmatmul")
POOLS = ("max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool")
FREE = frozenset("""flatten view reshape size dim getitem getattr cat stack permute transpose contiguous
    squeeze unsqueeze chunk split expand t clone detach to float type_as dropout identity numel get
    unflatten dropout2d""".split())
MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardtanh: "hardtanh", nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu", nn.Hardsigmoid: "hardsigmoid", nn.Hardswish: "hardswish",
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu", nn.Softmax: "softmax",
    nn.modules.batchnorm._BatchNorm: "batch_norm", nn.modules.conv._ConvNd: "conv",
    nn.Linear: "linear", nn.modules.pooling._MaxPoolNd: "max_pool",
    nn.modules.pooling._AvgPoolNd: "avg_pool", nn.modules.pooling._AdaptiveAvgPoolNd: "adaptive_avg_pool",
    nn.modules.pooling._AdaptiveMaxPoolNd: "adaptive_max_pool", nn.Identity: "identity",
    nn.modules.dropout._DropoutNd: "dropout", nn.Flatten: "flatten", nn.Unflatten: "unflatten",
}


def _module_recipe(module: nn.Module) -> str | None:
    for klass in type(module).__mro__:
        if klass in MODULES:
            return MODULES[klass]
    return None


def _function_recipe(target: Any) -> str:
    """``F.max_pool2d`` → ``max_pool``, ``Tensor.__iadd__`` → ``iadd``, ``relu_`` → ``relu``."""
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return re.sub(r"(?<=[a-z_])[123]d$", "", name.strip("_"))


def _is_leaf(module: nn.Module) -> bool:
    """Costed as a whole: the hook, a known type, or any other module from torch.nn itself."""
    if hasattr(module, "ace_operations") or _module_recipe(module) is not None:
        return True
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, containers)


def _bits_pair(name: str, value: object) -> tuple[int, int]:
    if (not isinstance(value, tuple | list) or len(value) != 2
            or any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= FLOAT_BITS for b in value)):
        raise ValueError(f"{name} must be a pair (w_bits, a_bits) of ints from 1 to {FLOAT_BITS}, got {value!r}")
    return int(value[0]), int(value[1])


@dataclass
class _Counter:
    """Turns each costed call into ``Operation`` records; shared by the fx and the hook driver."""

    bits: tuple[int, int] | dict[str, tuple[int, int]]
    elementwise_bits: int
    operations: list[Operation] = field(default_factory=list)
    layer_types: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    weighted: set[str] = field(default_factory=set)

    def unique(self, scope: str, base: str) -> str:
        name = f"{scope}.{base}" if scope else base
        stem, index = name, 1
        while name in self.layer_types:
            name, index = f"{stem}_{index}", index + 1
        return name

    def precision(self, name: str, module: nn.Module | None) -> tuple[int, int]:
        self.weighted.add(name)
        if isinstance(self.bits, tuple):
            return self.bits
        if name in self.bits:
            return self.bits[name]
        w_bits = getattr(module, "weight_bits", None)
        if w_bits is None:
            w_bits = module.bits if isinstance(module, QuantizedWeight) else FLOAT_BITS
        a_bits = getattr(module, "input_bits", None)
        return int(w_bits), FLOAT_BITS if a_bits is None else int(a_bits)

    def module(self, name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.layer_types[name] = type(module).__name__
        if hasattr(module, "ace_operations"):
            self.operations.extend(module.ace_operations(tuple(inputs), output, name))
            return
        recipe = _module_recipe(module)
        weight = getattr(module, "weight", None)
        kernel = getattr(module, "kernel_size", None)
        if not self.cost(name, recipe or type(module).__name__, module, inputs, output, weight, kernel):
            self.unknown.append(f"{name} ({type(module).__name__})")

    def function(self, scope: str, target: Any, args: tuple, kwargs: dict, output: Any) -> None:
        recipe = _function_recipe(target)
        if recipe in FREE or not isinstance(output, torch.Tensor):
            return
        name = self.unique(scope, recipe)
        self.layer_types[name] = recipe
        weight = args[1] if recipe in ("conv", "linear") and len(args) > 1 else kwargs.get("weight")
        kernel = args[1] if recipe in POOLS[:2] and len(args) > 1 else kwargs.get("kernel_size")
        if not self.cost(name, recipe, None, args, output, weight, kernel):
            self.unknown.append(f"{name} ({recipe})")

    def cost(self, name, recipe, module, inputs, output, weight, kernel) -> bool:
        """Append the operations of one call; False when it cannot be costed."""
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        if recipe in FREE:
            return True
        if not isinstance(output, torch.Tensor) or not tensors:
            return False
        e, n_out = self.elementwise_bits, output.numel()
        ops: list[Operation] = []
        if recipe in MACS:
            if recipe in ("conv", "linear"):
                if weight is None:
                    return False
                transposed = getattr(module, "transposed", False)
                macs = (tensors[0].numel() if transposed else n_out) * weight[0].numel()
            else:
                macs = n_out * tensors[0].shape[-1]
            w_bits, a_bits = self.precision(name, module)
            ops.append(Operation(name, "mac", macs, (w_bits, a_bits), "mac"))
            if getattr(module, "bias", None) is not None:
                ops.append(Operation(name, "add", n_out, (e, e), "bias"))
            if w_bits < FLOAT_BITS:
                ops.append(Operation(name, "mul", n_out, (e, e), "rescale"))
            if a_bits < FLOAT_BITS:
                ops.append(Operation(name, "mul", tensors[0].numel(), (e, e), "quantise"))
        elif recipe in POOLS:
            windows = _pool_windows(tensors[0], output, kernel, adaptive=recipe.startswith("adaptive"))
            if windows is None:
                return False
            kind = "compare" if "max" in recipe else "add"
            ops.append(Operation(name, kind, windows - n_out, (e, e), "pooling"))
            if kind == "add":
                ops.append(Operation(name, "mul", n_out, (e, e), "pooling"))
        elif recipe in ("mean", "sum"):
            ops.append(Operation(name, "add", tensors[0].numel() - n_out, (e, e), "reduction"))
            if recipe == "mean":
                ops.append(Operation(name, "mul", n_out, (e, e), "reduction"))
        elif recipe in RECIPES:
            role = ROLES.get(recipe, "activation")
            if recipe.endswith(("add", "sub")):
                same = len(tensors) == 2 and tensors[0].shape == tensors[1].shape
                role = "residual add" if same else "add"
            for kind, per_element in RECIPES[recipe]:
                ops.append(Operation(name, kind, per_element * n_out, (e,) if kind in ("compare", "exp") else (e, e), role))
        else:
            return False
        self.operations.extend(ops)
        return True


def _pool_windows(x: torch.Tensor, out: torch.Tensor, kernel: Any, adaptive: bool) -> int | None:
    """Input elements read, summed over every pooling window (adaptive windows counted exactly)."""
    spatial = out.dim() - 2 if out.dim() > 2 else out.dim() - 1
    if spatial < 1:
        return None
    outer = out.numel() // math.prod(out.shape[-spatial:])
    if adaptive:
        total = outer
        for size_in, size_out in zip(x.shape[-spatial:], out.shape[-spatial:], strict=True):
            total *= sum(math.ceil((i + 1) * size_in / size_out) - (i * size_in) // size_out for i in range(size_out))
        return total
    if kernel is None:
        return None
    window = math.prod(kernel) if isinstance(kernel, tuple | list) else int(kernel) ** spatial
    return out.numel() * window


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf(m) or super().is_leaf_module(m, qualname)


class _Interpreter(fx.Interpreter):
    def __init__(self, graph_module: fx.GraphModule, counter: _Counter):
        super().__init__(graph_module)
        self.counter = counter

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.op in ("call_module", "call_function", "call_method"):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if n.op == "call_module":
                self.counter.module(n.target, self.fetch_attr(n.target), args, result)
            else:
                stack = n.meta.get("nn_module_stack") or {}
                scope = next(reversed(stack)) if stack else ""
                self.counter.function(scope, n.target, args, kwargs, result)
        return result


class _FunctionMode(TorchFunctionMode):
    """Costs torch functions called outside leaf modules (the hook driver)."""

    def __init__(self, counter: _Counter):
        super().__init__()
        self.counter, self.scopes, self.leaf_depth = counter, [""], 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.leaf_depth == 0:
            self.counter.function(self.scopes[-1], func, args, kwargs, result)
        return result


def _count_with_hooks(model: nn.Module, inputs: tuple, counter: _Counter) -> None:
    mode = _FunctionMode(counter)
    handles = []
    for name, module in model.named_modules():
        leaf = _is_leaf(module)

        def pre(mod, args, name=name, leaf=leaf):
            mode.scopes.append(name)
            mode.leaf_depth += leaf

        def post(mod, args, output, name=name, leaf=leaf):
            mode.scopes.pop()
            mode.leaf_depth -= leaf
            if leaf and mode.leaf_depth == 0:
                counter.module(name, mod, args, output)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with mode:
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()


def example_input(model: nn.Module, batch_size: int = 1) -> torch.Tensor:
    """A zero input for ``model``: its ``example_input()`` method or its ``input_shape`` attribute."""
    if callable(getattr(model, "example_input", None)):
        return model.example_input(batch_size)
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__} has no example_input() or input_shape; pass example_input")
    return torch.zeros(batch_size, *shape)


def count(
    model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...],
    bits: tuple[int, int] | Mapping[str, tuple[int, int]] | None = None,
    cost_model: str | CostModel = "acev2", elementwise_bits: int | None = None, method: str = "auto",
) -> AceReport:
    """Count every arithmetic operation of ``model`` on ``example_input``; see the module docstring."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ValueError("example_input must be a torch.Tensor or a tuple of tensors "
                         f"(e.g. torch.zeros(1, 3, 224, 224)), got {type(example_input).__name__}")
    if method not in ("auto", "fx", "hooks"):
        raise ValueError(f"method must be one of ('auto', 'fx', 'hooks'), got {method!r}")
    if bits is None:
        bits = {}
    elif isinstance(bits, Mapping):
        bits = {str(name): _bits_pair(f"bits[{name!r}]", pair) for name, pair in bits.items()}
    else:
        bits = _bits_pair("bits", bits)
    e = FLOAT_BITS if elementwise_bits is None else elementwise_bits
    if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= FLOAT_BITS:
        raise ValueError(f"elementwise_bits must be an int from 1 to {FLOAT_BITS} or None, got {elementwise_bits!r}")
    chosen = cost_models.get(cost_model)
    counter, used = _Counter(bits, e), method
    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            graph = None
            if method != "hooks":
                try:
                    graph = fx.GraphModule(model, _Tracer().trace(model))
                except Exception:  # noqa: BLE001 — any tracing failure falls back to hooks
                    if method == "fx":
                        raise
            if graph is not None:
                _Interpreter(graph, counter).run(*inputs)
                used = "fx"
            else:
                _count_with_hooks(model, inputs, counter)
                used = "hooks"
    finally:
        for module, mode in training:
            module.train(mode)
    if isinstance(bits, dict) and (stray := sorted(set(bits) - counter.weighted)):
        raise ValueError(f"bits names no conv/linear/matmul layer: {stray}; "
                         f"layers that take bits: {sorted(counter.weighted)}")
    return AceReport(counter.operations, counter.layer_types, counter.unknown, chosen, used)



def count_zoo_model(
    name: str, w_bits: int | None = None, a_bits: int | None = None, elementwise_bits: int | None = None,
    cost_model: str | CostModel = "acev2",
) -> AceReport:
    """``count`` for the built-in model ``name`` (``qatcore.zoo``) on one zero input; ``w_bits`` and
    ``a_bits`` (both or neither) set every conv/linear layer, else each layer keeps its own."""
    from qatcore import zoo

    model = zoo.build(name)
    if (w_bits is None) != (a_bits is None):
        raise ValueError(f"w_bits and a_bits must be given together, got w_bits={w_bits!r}, a_bits={a_bits!r}")
    bits = None if w_bits is None else _bits_pair("w_bits and a_bits", (w_bits, a_bits))
    return count(model, torch.zeros(1, *zoo.input_shape(name, model)), bits, cost_model, elementwise_bits)


def sweep(models: Mapping[str, nn.Module], bit_widths: tuple[int, ...] = (1, 2, 4, 8),
          elementwise: tuple[str, ...] = ("float", "quantised")) -> list[dict[str, Any]]:
    """Totals of each model with every conv/linear at ``(b, b)`` bits, element-wise operations in
    float (32 bits) or quantised to ``b`` bits too; one row per (model, b, element-wise)."""
    rows = []
    for name, model in models.items():
        x = example_input(model)
        for b in bit_widths:
            for mode in elementwise:
                if mode not in ("float", "quantised"):
                    raise ValueError(f"elementwise must hold 'float' or 'quantised', got {mode!r}")
                totals = count(model, x, (b, b), elementwise_bits=b if mode == "quantised" else None).totals
                rows.append({"model": name, "bits": b, "elementwise": mode,
                             **{key: totals[key] for key in ("macs", "ace", "acev2", "energy_pj")}})
    return rows


def rank_correlations(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Spearman rank correlation of ACE and of ACEv2 with the 45 nm energy across ``rows``."""
    from scipy.stats import spearmanr

    energy = [row["energy_pj"] for row in rows]
    return {metric: float(spearmanr([row[metric] for row in rows], energy).statistic) for metric in ("ace", "acev2")}
