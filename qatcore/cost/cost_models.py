"""Cost models for ``qatcore.cost.ace``: what one counted operation costs under ACE, ACEv2 or energy.

An ``Operation`` is ``count`` arithmetic operations of one ``kind`` in one layer, each on operands
of ``bits`` widths. Kinds: ``"mac"`` (a multiply-accumulate of a conv/linear/matmul, bits
``(w_bits, a_bits)``), ``"mul"``, ``"div"``, ``"add"`` (also subtraction), ``"shift"`` (a
multiplication by a power of two), ``"compare"`` (ReLU, max pooling, clipping) and ``"exp"``.
An operand width is an integer width (1 to 32 bits) or ``FLOAT`` (``None``): an unquantised
float operand, priced at the report's ``float_bits`` — 16 by default, as PokeBNN prices an
unquantised operand as bfloat16, or 32 (float32) on request.

* ACE (PokeBNN, Zhang et al. 2022; its authors' code: ``google/aqt``,
  ``aqt/jax_legacy/jax/imagenet/pokebnn.py``, ``size_stats``): only multiply-accumulates count,
  each ``i·j`` for an i-bit by j-bit product, per image.
* Sops (the same code): element-wise scalar operations, counted unweighted and kept outside ACE.
  We count one per arithmetic operation (a folded batch norm is a multiply and an add: 2 sops);
  PokeBNN's code counts one per element of each element-wise layer.
* ACEv2 (PikeLPN, Neseem et al. 2024). What follows the paper's abstract: ACEv2 is ACE plus the
  element-wise operations ACE ignores (batch norm, parameterised activations, quantisation scaling
  and re-scaling, residual additions, pooling). What each operation costs is the course's own model,
  on four assumptions, stated here once: (1) a multiplication of i- and j-bit operands costs ``i·j``,
  as a MAC does in ACE, and a division or an ``exp`` counts as one multiplication of its widths;
  (2) an addition, comparison or shift costs the wider operand's width; (3) a MAC keeps ACE's cost
  ``i·j``: its accumulation is not charged again unless ``ACEv2(accumulator_bits=…)`` asks for it;
  (4) an unquantised float operand counts at the report's ``float_bits``.
* Energy (our reading of a published table): the 45 nm figures of Horowitz (ISSCC 2014), as QKeras'
  qtools uses them: fp32 add 0.9 pJ, mul 3.7 pJ; fp16 add 0.4 pJ, mul 1.1 pJ (used for every
  16-bit float, bfloat16 included); int b-bit add ``0.003125·b`` pJ, int b×b mul
  ``0.002995·b² + 0.001042·b`` pJ (an i×j product uses ``i·j`` and ``(i + j)/2``). A MAC is a
  multiplication plus an addition into a 32-bit accumulator (int32, or float32 when an operand is
  float); ``exp`` and ``div`` cost one multiplication, a shift or comparison one addition.

``AceReport`` applies every model to the counted operations and sums them per layer and kind.

A cost model is any object with a ``name`` and a ``cost(op) -> float`` (the cost of all
``op.count`` operations, ``op`` with every width resolved to an integer); ``ACE()``, ``Sops()``,
``ACEv2()`` and ``Energy45nm()`` are the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, cast, runtime_checkable

from qatcore.checks import check_choice

#: An unquantised float operand in ``Operation.bits``.
FLOAT = None
#: Default width of an unquantised float operand: bfloat16, as PokeBNN counts it.
FLOAT_BITS = 16
FLOAT_WIDTHS = (16, 32)
MAX_BITS = 32
KINDS = ("mac", "mul", "div", "add", "shift", "compare", "exp")
_PRODUCTS = ("mac", "mul", "div", "exp")


@dataclass(frozen=True)
class Operation:
    """``count`` operations of one ``kind`` in ``layer``, each on operands ``bits`` wide
    (``FLOAT``: an unquantised float); ``floats`` marks, once resolved, which operands are float."""

    layer: str
    kind: str
    count: int
    bits: tuple[int | None, ...]
    role: str = ""  # what the operation does there: "batch norm", "rescale", "residual add" …
    floats: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count!r}")
        if not self.bits or any(b is not None and not 1 <= b <= MAX_BITS for b in self.bits):
            raise ValueError(
                f"bits must be 1 to {MAX_BITS} operand widths or FLOAT (None), got {self.bits!r}"
            )
        if self.floats and len(self.floats) != len(self.bits):
            raise ValueError(
                f"floats must mark each of the {len(self.bits)} operands, got {self.floats!r}"
            )

    def resolved(self, float_bits: int = FLOAT_BITS) -> Operation:
        """The same operation with each ``FLOAT`` operand ``float_bits`` wide and marked in ``floats``."""
        check_choice("float_bits", float_bits, FLOAT_WIDTHS)
        if all(b is not None for b in self.bits):
            return self
        floats = tuple(
            b is None or (bool(self.floats) and self.floats[i]) for i, b in enumerate(self.bits)
        )
        return replace(
            self, bits=tuple(float_bits if b is None else b for b in self.bits), floats=floats
        )

    def float_width(self) -> int:
        """The widest float operand of a resolved operation (0 when none is float)."""
        return max((b for b, f in zip(_widths(self), self.floats, strict=False) if f), default=0)


def _widths(op: Operation) -> tuple[int, ...]:
    """``op.bits`` of a resolved operation, where no operand is ``FLOAT`` any more."""
    return cast(tuple[int, ...], op.bits)


def _product(bits: tuple[int, ...]) -> int:
    """Width product of a two-operand multiplication; a one-operand one (exp) squares its width."""
    return bits[0] * (bits[1] if len(bits) > 1 else bits[0])


@runtime_checkable
class CostModel(Protocol):
    """What a cost model provides: a ``name`` and the cost of one ``Operation`` record."""

    @property
    def name(self) -> str: ...

    def cost(self, op: Operation) -> float: ...


@dataclass(frozen=True)
class ACE:
    """PokeBNN's Arithmetic Computation Effort: ``Σ n_ij·i·j`` over multiply-accumulates only."""

    name: str = "ace"

    def cost(self, op: Operation) -> float:
        return float(op.count * _product(_widths(op))) if op.kind == "mac" else 0.0


@dataclass(frozen=True)
class Sops:
    """PokeBNN-style scalar operations: every element-wise operation counted once, unweighted."""

    name: str = "sops"

    def cost(self, op: Operation) -> float:
        return 0.0 if op.kind == "mac" else float(op.count)


@dataclass(frozen=True)
class ACEv2:
    """PikeLPN's ACEv2 in the course's cost model (its assumptions: the module docstring)."""

    name: str = "acev2"
    accumulator_bits: int | None = None  # also charge each MAC's accumulation at this width

    def cost(self, op: Operation) -> float:
        if op.kind in _PRODUCTS:
            each = _product(_widths(op))
            if op.kind == "mac" and self.accumulator_bits is not None:
                each += self.accumulator_bits
        else:
            each = max(_widths(op))
        return float(op.count * each)


@dataclass(frozen=True)
class Energy45nm:
    """Energy in pJ from Horowitz's 45 nm table (ISSCC 2014), as in QKeras qtools."""

    name: str = "energy_pj"
    fp32_add: float = 0.9
    fp32_mul: float = 3.7
    fp16_add: float = 0.4
    fp16_mul: float = 1.1
    int_add_per_bit: float = 0.003125
    int_mul_quadratic: float = 0.002995
    int_mul_linear: float = 0.001042
    accumulator_bits: int = 32

    def add(self, bits: int, floating: bool = False) -> float:
        """One addition at ``bits``: an integer, or a float (16 or 32 bits) when ``floating``."""
        if floating:
            return self.fp16_add if bits <= 16 else self.fp32_add
        return self.int_add_per_bit * bits

    def mul(self, bits: tuple[int, ...], float_width: int = 0) -> float:
        """One multiplication of integer operands ``bits`` wide, or a float one of ``float_width`` bits."""
        if float_width:
            return self.fp16_mul if float_width <= 16 else self.fp32_mul
        mean = sum(bits) / len(bits)
        return self.int_mul_quadratic * _product(bits) + self.int_mul_linear * mean

    def cost(self, op: Operation) -> float:
        float_width = op.float_width()
        if op.kind == "mac":
            accumulate = (
                self.fp32_add if float_width else self.int_add_per_bit * self.accumulator_bits
            )
            each = self.mul(_widths(op), float_width) + accumulate
        elif op.kind in _PRODUCTS:
            each = self.mul(_widths(op), float_width)
        else:
            each = self.add(max(_widths(op)), bool(float_width))
        return op.count * each


STANDARD: dict[str, CostModel] = {
    "ace": ACE(),
    "sops": Sops(),
    "acev2": ACEv2(),
    "energy_pj": Energy45nm(),
}


def get(cost_model: str | CostModel) -> CostModel:
    """A cost model by name (``"ace"``, ``"sops"``, ``"acev2"``, ``"energy"``/``"energy_pj"``) or itself."""
    if isinstance(cost_model, str):
        cost_model = "energy_pj" if cost_model == "energy" else cost_model
        if cost_model not in STANDARD:
            raise ValueError(
                f"cost_model must be one of {sorted(STANDARD)} or a CostModel, got {cost_model!r}"
            )
        return STANDARD[cost_model]
    if not isinstance(cost_model, CostModel):
        raise TypeError(
            f"cost_model must be one of {sorted(STANDARD)} or a CostModel, got {cost_model!r}"
        )
    return cost_model


class AceReport:
    """What ``qatcore.cost.ace.count`` found: the operations, their costs, totals and tables."""

    def __init__(
        self,
        operations: list[Operation],
        layer_types: dict[str, str],
        unknown: list[str],
        cost_model: CostModel,
        method: str,
        float_bits: int = FLOAT_BITS,
        batch_size: int = 1,
        per_image: bool = True,
    ) -> None:
        self.operations = [op.resolved(float_bits) for op in operations]
        self.layer_types, self.unknown = dict(layer_types), list(unknown)
        self.cost_model, self.method, self.float_bits = cost_model, method, float_bits
        self.batch_size, self.per_image = batch_size, per_image
        self.models = dict(STANDARD)
        self.models.setdefault(cost_model.name, cost_model)
        self.costs = [
            {name: model.cost(op) for name, model in self.models.items()} for op in self.operations
        ]

    def _sum(self, keep) -> dict[str, float]:
        total = {"macs": 0, "operations": 0, **{name: 0.0 for name in self.models}}
        for op, cost in zip(self.operations, self.costs, strict=True):
            if keep(op):
                total["macs"] += op.count if op.kind == "mac" else 0
                total["operations"] += op.count
                for name, value in cost.items():
                    total[name] += value
        return total

    @property
    def totals(self) -> dict[str, float]:
        """MACs, operation count and the total of every cost model (ACE, ACEv2, energy in pJ …)."""
        return self._sum(lambda op: True)

    @property
    def total(self) -> float:
        """The total under the chosen cost model."""
        return self.totals[self.cost_model.name]

    def layers(self) -> list[dict[str, Any]]:
        """One row per layer, in execution order: its type, MACs and every model's cost."""
        return [
            {"layer": name, "type": kind, **self._sum(lambda op, name=name: op.layer == name)}
            for name, kind in self.layer_types.items()
        ]

    def breakdown(self, by: str = "kind") -> dict[str, dict[str, float]]:
        """Totals per operation ``kind`` (mac, mul, add …) or per ``role`` (batch norm, rescale …)."""
        check_choice("by", by, ("kind", "role"))
        keys = dict.fromkeys(getattr(op, by) for op in self.operations)
        return {key: self._sum(lambda op, key=key: getattr(op, by) == key) for key in keys}

    def elementwise_share(self, model: str = "acev2") -> float:
        """The fraction of ``model``'s total spent outside multiply-accumulates."""
        check_choice("model", model, sorted(self.models))
        total = self.totals[model]
        return 0.0 if total == 0 else 1.0 - self._sum(lambda op: op.kind == "mac")[model] / total

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the conventions, ``totals``, ``layers``, ``kinds``, ``roles``, ``unknown``."""
        return {
            "cost_model": self.cost_model.name,
            "method": self.method,
            "float_bits": self.float_bits,
            "per_image": self.per_image,
            "batch_size": self.batch_size,
            "totals": self.totals,
            "layers": self.layers(),
            "kinds": self.breakdown("kind"),
            "roles": self.breakdown("role"),
            "unknown": self.unknown,
        }

    def to_markdown(self) -> str:
        """Totals, the per-layer table, the breakdown by kind and any operation left uncosted."""
        names = ["macs", *self.models]
        lines = ["| layer | type | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        rows = [*self.layers(), {"layer": "**total**", "type": "", **self.totals}]
        lines += [
            f"| {r['layer']} | {r['type']} | " + " | ".join(f"{r[n]:.4g}" for n in names) + " |"
            for r in rows
        ]
        lines += [
            "",
            "| kind | count | " + " | ".join(names[1:]) + " |",
            "|---|---:|" + "---:|" * (len(names) - 1),
        ]
        lines += [
            f"| {kind} | {t['operations']:,} | "
            + " | ".join(f"{t[n]:.4g}" for n in names[1:])
            + " |"
            for kind, t in self.breakdown("kind").items()
        ]
        if self.unknown:
            lines += ["", "Not costed: " + ", ".join(self.unknown)]
        return "\n".join(lines)

    def layer_breakdown(self, model: str = "acev2") -> dict[str, dict[str, float]]:
        """``model``'s cost per role for each conv/linear layer, counting every element-wise op
        (batch norm, activation, pooling, residual add …) with the conv/linear layer run before it."""
        check_choice("model", model, sorted(self.models))
        macs = {op.layer for op in self.operations if op.kind == "mac"}
        groups: dict[str, dict[str, float]] = {}
        current = None
        for op, cost in zip(self.operations, self.costs, strict=True):
            current = op.layer if op.layer in macs or current is None else current
            roles = groups.setdefault(current, {})
            roles[op.role or op.kind] = roles.get(op.role or op.kind, 0.0) + cost[model]
        return groups
