"""ACE and ACEv2 accounting for any ``nn.Module``: every arithmetic operation with its bit widths.

``count(model, example_input, bits=None, cost_model="acev2", elementwise_bits=None)`` runs the
model once on ``example_input`` (eval mode, no gradients), traced with ``torch.fx`` or, where
tracing fails, with module hooks plus a ``TorchFunctionMode``, and returns an ``AceReport``:
totals (MACs, ACE, PokeBNN-style sops, ACEv2, energy in pJ), a per-layer table, a breakdown by
operation kind, ``.to_markdown()`` and ``.to_dict()``. An operation it cannot cost is listed in
``report.unknown``, never silently dropped.

**PokeBNN's conventions are the defaults** (its authors' code, ``google/aqt``,
``aqt/jax_legacy/jax/imagenet/pokebnn.py``): counts are per image (``per_image=True`` divides by
the batch, the first dimension of the first input), and an unquantised operand counts as 16 bits
(bfloat16; ``float_bits=32`` prices it as float32).

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
/ ``input_bits`` attributes (``qatcore.quantized.QuantizedLayer``: every quantized layer of the
three papers has them); (3) a Brevitas or torchao layer's own quantisers (``qatcore.cost.foreign``); (4) for
the input, the width of a foreign activation quantiser that produced it (followed through
reshapes and max pooling); (5) float. Element-wise operations run at ``elementwise_bits``
(default float). In ``bits``, attributes and ``elementwise_bits`` an integer width is 1 to 16 bits
(``MAX_INT_BITS``: PokeBNN's code refuses any operand wider than 16 bits), and ``None`` or 32
means an unquantised float, priced at ``float_bits``; 17 to 31 bits are refused. A conv/linear subclass that
none of these explains is costed as float with a warning.

**Foreign activation quantisers** (Brevitas ``QuantReLU``, ``QuantIdentity`` …) are costed whole,
never traced into: per output element a clip (2 compares) and a multiply onto the grid (role
"quantise"), at the element-wise width; the conv/linear reading their output takes its width as
its activation width and pays no second "quantise" multiply.

**Hook**: a module that defines ``ace_operations(self, inputs, output, name) -> list[Operation]``
is costed by that method alone, not traced into; a module whose ``ace_recipe`` attribute names one of
``RECIPES`` (e.g. ``"sign"``, one comparison per output element) is costed by that recipe, not by the
arithmetic its forward happens to use.

The reading of ACE, ACEv2 and the energy table is stated in ``qatcore.cost.cost_models``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

from qatcore.checks import check_choice
from qatcore.cost import cost_models, foreign
from qatcore.cost.cost_models import (
    FLOAT_BITS,
    FLOAT_WIDTHS,
    MAX_BITS,
    AceReport,
    CostModel,
    Operation,
)

__all__ = ["AceReport", "Operation", "count", "example_input"]

#: the widest integer operand a user or a module may give (PokeBNN's ``compute_cost_utils.py`` in
#: ``google/aqt`` raises on an operand wider than 16 bits); 32 (``MAX_BITS``) still means float
MAX_INT_BITS = 16
WIDTHS = f"an int from 1 to {MAX_INT_BITS}, or {MAX_BITS} or None (float)"

# per element of the output: (kind, how many) — see the module docstring
RECIPES: dict[str, tuple[tuple[str, int], ...]] = {
    "relu": (("compare", 1),),
    "sign": (("compare", 1),),  # a binary activation: one comparison with 0
    "copysign": (("compare", 1),),
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
    "add": (("add", 1),),
    "iadd": (("add", 1),),
    "radd": (("add", 1),),
    "sub": (("add", 1),),
    "isub": (("add", 1),),
    "rsub": (("add", 1),),
    "mul": (("mul", 1),),
    "imul": (("mul", 1),),
    "rmul": (("mul", 1),),
    "div": (("div", 1),),
    "truediv": (("div", 1),),
    "itruediv": (("div", 1),),
}
ROLES = {
    "batch_norm": "batch norm",
    "prelu": "activation",
    "leaky_relu": "activation",
    "softmax": "softmax",
    "mul": "scale",
    "div": "scale",
}
MACS = ("conv", "linear", "matmul", "mm", "bmm", "rmatmul")
POOLS = ("max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool")
FREE = frozenset(
    """flatten view reshape size dim getitem getattr cat stack permute transpose contiguous
    squeeze unsqueeze chunk split expand t clone detach to float type_as dropout identity numel get
    unflatten dropout2d""".split()
)
GRID_PRESERVING = ("max_pool", "adaptive_max_pool")  # their output stays on the input's grid
MODULES: dict[type, str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.Hardtanh: "hardtanh",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Hardswish: "hardswish",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.SiLU: "silu",
    nn.Softmax: "softmax",
    nn.modules.batchnorm._BatchNorm: "batch_norm",
    nn.modules.conv._ConvNd: "conv",
    nn.Linear: "linear",
    nn.modules.pooling._MaxPoolNd: "max_pool",
    nn.modules.pooling._AvgPoolNd: "avg_pool",
    nn.modules.pooling._AdaptiveAvgPoolNd: "adaptive_avg_pool",
    nn.modules.pooling._AdaptiveMaxPoolNd: "adaptive_max_pool",
    nn.Identity: "identity",
    nn.modules.dropout._DropoutNd: "dropout",
    nn.Flatten: "flatten",
    nn.Unflatten: "unflatten",
}


def _module_recipe(module: nn.Module) -> str | None:
    named = getattr(module, "ace_recipe", None)  # a module may name its recipe without importing us
    if isinstance(named, str) and named in RECIPES:
        return named
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
    if foreign.activation_bits(module) is not None:
        return True
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, containers)


def _width(name: str, value: object) -> int | None:
    """An operand width from the user or a module: 1 to 16 bits, or ``None`` (32 or None: float)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be {WIDTHS}, got {value!r}")
    if value == MAX_BITS:
        return None
    if not 1 <= value <= MAX_INT_BITS:
        raise ValueError(
            f"{name} must be {WIDTHS}, got {value!r} (PokeBNN's cost code refuses integer "
            f"operands wider than {MAX_INT_BITS} bits)"
        )
    return int(value)


def bits_pair(name: str, value: object) -> tuple[int | None, int | None]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (w_bits, a_bits), each {WIDTHS}, got {value!r}")
    try:
        return _width(name, value[0]), _width(name, value[1])
    except ValueError:
        raise ValueError(
            f"{name} must be a pair (w_bits, a_bits), each {WIDTHS}, got {value!r}"
        ) from None


def _attribute_width(value: Any) -> int | None:
    return None if value is None else _width("a module's bit width", int(value))


class _CostsItself(Protocol):
    """The hook: a module that lists its own operations."""

    def ace_operations(self, inputs: tuple, output: Any, name: str) -> list[Operation]: ...


@dataclass
class _Counter:
    """Turns each costed call into ``Operation`` records; shared by the fx and the hook driver."""

    bits: tuple[int | None, int | None] | dict[str, tuple[int | None, int | None]]
    elementwise_bits: int | None
    operations: list[Operation] = field(default_factory=list)
    layer_types: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    weighted: set[str] = field(default_factory=set)
    grid: dict[int, tuple[torch.Tensor, int]] = field(default_factory=dict)  # id → (tensor, bits)
    leaves: frozenset[str] = frozenset()  # names of the modules costed whole

    def inside_leaf(self, scope: str, strictly: bool = False) -> bool:
        """Whether ``scope`` is (``strictly``: lies under) a module costed whole — a library may run a
        leaf's own code, e.g. its quantiser's scale arithmetic, outside the module's hooks."""
        return any(
            (scope == leaf and not strictly) or scope.startswith(leaf + ".") for leaf in self.leaves
        )

    def mark(self, tensor: Any, bits: int | None) -> None:
        """Remember that ``tensor`` lies on a ``bits``-bit grid (a foreign quantiser's output)."""
        if isinstance(tensor, torch.Tensor) and bits is not None:
            self.grid[id(tensor)] = (tensor, bits)

    def grid_bits(self, tensor: Any) -> int | None:
        """The grid width of ``tensor`` if a foreign quantiser produced it, else ``None``."""
        found = self.grid.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return found[1] if found is not None and found[0] is tensor else None

    def follow(self, inputs: tuple, output: Any) -> None:
        """A reshape or max pooling keeps its input's grid."""
        first = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
        self.mark(output, self.grid_bits(first))

    def unique(self, scope: str, base: str) -> str:
        name = f"{scope}.{base}" if scope else base
        stem, index = name, 1
        while name in self.layer_types:
            name, index = f"{stem}_{index}", index + 1
        return name

    def precision(
        self, name: str, module: nn.Module | None, x: Any
    ) -> tuple[int | None, int | None, bool]:
        """``(w_bits, a_bits, a_on_grid)`` of a conv/linear/matmul (``None``: float); ``a_on_grid``
        when its input came on a foreign quantiser's grid (already paid for there)."""
        self.weighted.add(name)
        if isinstance(self.bits, tuple):
            return (*self.bits, False)
        if name in self.bits:
            return (*self.bits[name], False)
        on_grid = self.grid_bits(x)
        if module is None:
            return None, on_grid, on_grid is not None
        known = True
        if hasattr(module, "weight_bits"):  # qatcore.quantized.QuantizedLayer
            w_bits = _attribute_width(module.weight_bits)
        elif (w_foreign := foreign.weight_bits(module)) != foreign.UNKNOWN:
            w_bits = w_foreign
        else:
            w_bits, known = None, type(module).__module__.startswith("torch.nn")
        a_bits = _attribute_width(getattr(module, "input_bits", None))
        a_foreign = foreign.input_bits(module) if a_bits is None else None
        if a_foreign is not None and a_foreign != foreign.UNKNOWN:
            a_bits = a_foreign
        if a_bits is None and on_grid is not None:
            return w_bits, on_grid, True
        if not known and a_bits is None:
            warnings.warn(
                f"ace.count: layer {name!r} is a {type(module).__name__}, a conv/linear subclass it "
                "does not know; costed at float width (give bits= or weight_bits/input_bits)",
                stacklevel=2,
            )
        return w_bits, a_bits, False

    def module(self, name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        if self.inside_leaf(name, strictly=True):
            return
        self.layer_types[name] = type(module).__name__
        if hasattr(module, "ace_operations"):
            hook = cast(_CostsItself, module)
            self.operations.extend(hook.ace_operations(tuple(inputs), output, name))
            return
        if (bits := foreign.activation_bits(module)) is not None and isinstance(
            output, torch.Tensor
        ):
            self.operations.extend(self.quantiser(name, output.numel()))
            self.mark(output, bits)
            return
        recipe = _module_recipe(module)
        weight = getattr(module, "weight", None)
        kernel = getattr(module, "kernel_size", None)
        if not self.cost(
            name, recipe or type(module).__name__, module, inputs, output, weight, kernel
        ):
            self.unknown.append(f"{name} ({type(module).__name__})")

    def quantiser(self, name: str, n: int) -> list[Operation]:
        """A foreign quantiser on ``n`` elements: a clip (2 compares) and a multiply onto the grid."""
        e = self.elementwise_bits
        return [
            Operation(name, "compare", 2 * n, (e,), "quantise"),
            Operation(name, "mul", n, (e, e), "quantise"),
        ]

    def function(self, scope: str, target: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if self.inside_leaf(scope):
            return
        recipe = _function_recipe(target)
        if recipe in FREE:
            self.follow(args, output)
        if recipe in FREE or not isinstance(output, torch.Tensor):
            return
        name = self.unique(scope, recipe)
        self.layer_types[name] = recipe
        weight = args[1] if recipe in ("conv", "linear") and len(args) > 1 else kwargs.get("weight")
        kernel = args[1] if recipe in POOLS[:2] and len(args) > 1 else kwargs.get("kernel_size")
        if not self.cost(name, recipe, None, args, output, weight, kernel):
            self.unknown.append(f"{name} ({recipe})")

    def cost(self, name, recipe, module, inputs, output, weight, kernel) -> bool:  # noqa: C901 — one branch per recipe family, read top to bottom
        """Append the operations of one call; False when it cannot be costed."""
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        if recipe in FREE or recipe in GRID_PRESERVING:
            self.follow(tuple(inputs), output)
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
            w_bits, a_bits, on_grid = self.precision(name, module, tensors[0])
            ops.append(Operation(name, "mac", macs, (w_bits, a_bits), "mac"))
            if getattr(module, "bias", None) is not None:
                ops.append(Operation(name, "add", n_out, (e, e), "bias"))
            if w_bits is not None:
                ops.append(Operation(name, "mul", n_out, (e, e), "rescale"))
            if a_bits is not None and not on_grid:
                ops.append(Operation(name, "mul", tensors[0].numel(), (e, e), "quantise"))
            if module is not None and (out_bits := foreign.output_bits(module)) is not None:
                ops += self.quantiser(name, n_out)
                self.mark(output, out_bits)
        elif recipe in POOLS:
            windows = _pool_windows(
                tensors[0], output, kernel, adaptive=recipe.startswith("adaptive")
            )
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
                ops.append(
                    Operation(
                        name,
                        kind,
                        per_element * n_out,
                        (e,) if kind in ("compare", "exp") else (e, e),
                        role,
                    )
                )
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
            total *= sum(
                math.ceil((i + 1) * size_in / size_out) - (i * size_in) // size_out
                for i in range(size_out)
            )
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
                assert isinstance(n.target, str)  # a call_module node names its module
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
    if callable(make := getattr(model, "example_input", None)):
        return make(batch_size)
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(
            f"{type(model).__name__} has no example_input() or input_shape; pass example_input"
        )
    return torch.zeros(batch_size, *shape)


def _bits_argument(
    bits: object,
) -> tuple[int | None, int | None] | dict[str, tuple[int | None, int | None]]:
    """``count``'s ``bits``: one (weight, activation) pair, or one pair per layer name ({} for none)."""
    if bits is None:
        return {}
    if isinstance(bits, Mapping):
        return {str(name): bits_pair(f"bits[{name!r}]", pair) for name, pair in bits.items()}
    return bits_pair("bits", bits)


def _elementwise_argument(elementwise_bits: int | None) -> int | None:
    try:
        return _width("elementwise_bits", elementwise_bits)
    except ValueError:
        raise ValueError(f"elementwise_bits must be {WIDTHS}, got {elementwise_bits!r}") from None


def count(
    model: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    bits: tuple[int | None, int | None] | Mapping[str, tuple[int | None, int | None]] | None = None,
    cost_model: str | CostModel = "acev2",
    elementwise_bits: int | None = None,
    method: str = "auto",
    float_bits: int = FLOAT_BITS,
    per_image: bool = True,
) -> AceReport:
    """Count every arithmetic operation of ``model`` on ``example_input``; see the module docstring."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ValueError(
            "example_input must be a torch.Tensor or a tuple of tensors "
            f"(e.g. torch.zeros(1, 3, 224, 224)), got {type(example_input).__name__}"
        )
    check_choice("method", method, ("auto", "fx", "hooks"))
    check_choice("float_bits", float_bits, FLOAT_WIDTHS)  # bfloat16 as PokeBNN, or float32
    pairs = _bits_argument(bits)
    e = _elementwise_argument(elementwise_bits)
    chosen = cost_models.get(cost_model)
    leaves = frozenset(name for name, module in model.named_modules() if name and _is_leaf(module))
    counter, used = _Counter(pairs, e, leaves=leaves), method
    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            graph = None
            if method != "hooks":
                try:
                    graph = fx.GraphModule(model, _Tracer().trace(model))
                except Exception:  # any tracing failure falls back to hooks
                    if method == "fx":
                        raise
            if graph is not None:
                _Interpreter(graph, counter).run(*inputs)
                used = "fx"
            else:
                _count_with_hooks(model, inputs, counter)
                used = "hooks"
                warn_if_input_dependent(model, inputs, counter, _Counter(pairs, e, leaves=leaves))
    finally:
        for module, mode in training:
            module.train(mode)
    if isinstance(pairs, dict) and (stray := sorted(set(pairs) - counter.weighted)):
        raise ValueError(
            f"bits names no conv/linear/matmul layer: {stray}; "
            f"layers that take bits: {sorted(counter.weighted)}"
        )
    batch = int(inputs[0].shape[0]) if inputs[0].dim() > 0 else 1
    operations = counter.operations
    if per_image and batch > 1:
        operations = [_per_image(op, batch) for op in operations]
    return AceReport(
        operations, counter.layer_types, counter.unknown, chosen, used, float_bits, batch, per_image
    )


class InputDependentCountWarning(UserWarning):
    """The model's operation counts change with its input (data-dependent control flow)."""


def warn_if_input_dependent(
    model: nn.Module, inputs: tuple, counted: _Counter, fresh: _Counter
) -> bool:
    """Count ``model`` again (hooks, in ``fresh``) on a second, random input of the same shapes and
    warn (``InputDependentCountWarning``) when its operations differ from ``counted``'s: a model
    whose control flow depends on its data is counted only along the branch the example takes.
    fx cannot trace such a model, so only the hook driver's counts are checked; True if they differ."""
    generator = torch.Generator().manual_seed(0)
    other = tuple(
        torch.randn(x.shape, generator=generator, dtype=x.dtype) * 3 + 1
        if x.is_floating_point()
        else x
        for x in inputs
    )
    try:
        with warnings.catch_warnings():  # the first count has said what it had to say
            warnings.simplefilter("ignore")
            _count_with_hooks(model, other, fresh)
    except Exception:  # an input it cannot take tells nothing about its branches
        return False

    def summary(counter: _Counter) -> list[tuple]:
        return sorted((op.layer, op.kind, op.count) for op in counter.operations)

    if summary(counted) == summary(fresh):
        return False
    warnings.warn(
        f"{type(model).__name__}'s operation counts depend on its input: a second, random input "
        f"gives {sum(op.count for op in fresh.operations)} operations against "
        f"{sum(op.count for op in counted.operations)} for the example input, so only the branches "
        "the example takes are counted (data-dependent control flow)",
        InputDependentCountWarning,
        stacklevel=3,
    )
    return True


def _per_image(op: Operation, batch: int) -> Operation:
    if op.count % batch:
        raise ValueError(
            f"per_image=True, but layer {op.layer!r} does {op.count} {op.kind} operations on a "
            f"batch of {batch}, not a multiple: count with per_image=False or a batch of 1"
        )
    return dataclasses.replace(op, count=op.count // batch)
