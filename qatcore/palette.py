"""The course's colours: one colour per run, estimator, operation type and variable, defined once.

Every figure of every notebook takes its colours from here, so the adjusted STE run, a MAC or the
saved activations have the same colour in every panel and every notebook. The colours are Okabe and
Ito's colour-blind-safe set (https://jfly.uni-koeln.de/color/); groups with more than its eight
colours take the rest from Paul Tol's muted set (https://personal.sron.nl/~pault/). Colours repeat
across groups (a run and a memory variable may share one), never within a group.

This is a shared module: it names the keys the paper packages use, as strings, and imports none of
them (``tests/test_palette.py`` checks the keys against the packages).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from qatcore.checks import check_choice

#: Okabe and Ito's eight colours
BLACK, ORANGE, SKY_BLUE, GREEN, YELLOW, BLUE, VERMILLION, PURPLE = (
    "#000000",
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
)
#: four more from Paul Tol's muted set, for the few groups that need them
INDIGO, WINE, OLIVE, TEAL = "#332288", "#882255", "#999933", "#44AA99"
GREY, LIGHT_GREY = "#999999", "#DDDDDD"

#: the order in which figures give colours to names no group defines (e.g. a network in a sweep)
SEQUENCE = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE, BLACK, WINE, OLIVE, TEAL, INDIGO)

#: the runs of the equivalence experiment (``qatcore.estimators.equivalence.RUNS``) and a plain STE run
RUNS = {
    "custom": BLUE,  # the custom estimator's run, the reference every other run is compared with
    "adjusted": ORANGE,  # the STE from M(w₀) with rate αη
    "ablation": PURPLE,  # the STE without the adjustments (SGD), or with them where they do not apply (Adam)
    "jitter": GREEN,  # the custom estimator again, learning rate × 1.01
    "ste": SKY_BLUE,  # a plain straight-through run
}
#: the gradient estimators (``qatcore.estimators.names()``); the STE has the plain STE run's colour
ESTIMATORS = {
    "ste": SKY_BLUE,
    "dsq": BLUE,
    "pwl": GREEN,
    "approx_sign": VERMILLION,
    "swish_sign": PURPLE,
    "ewgs": ORANGE,
}
#: what an operation does in a layer (the ``role`` of ``qatcore.cost.cost_models.Operation``), in the
#: order the cost breakdowns stack them: MACs first, at the bottom, in black
OPERATIONS = {
    "mac": BLACK,
    "batch norm": ORANGE,
    "rescale": SKY_BLUE,
    "quantise": VERMILLION,
    "activation": GREEN,
    "pooling": PURPLE,
    "bias": YELLOW,
    "residual add": BLUE,
    "add": INDIGO,
    "scale": WINE,
    "softmax": OLIVE,
    "reduction": TEAL,
}
#: the steps of PikeLPN's ladder (``qatcore.cost.pikelpn.LADDER``)
LADDER = {
    "float": GREY,
    "4-bit, float element-wise": VERMILLION,
    "+ QuantNorm": GREEN,
    "+ Double Quantization": ORANGE,
    "+ DHQ (PikeLPN-style)": BLUE,
}
#: the two kinds of kernel of a separable convolution
CONVOLUTIONS = {"depthwise": ORANGE, "pointwise": BLUE}
#: the kinds of variable a BNN training step holds (``qatcore.bnn.memory.KINDS``)
MEMORY = {
    "weights": BLUE,
    "weight gradients": SKY_BLUE,
    "optimizer state": GREEN,
    "saved activations": VERMILLION,
    "masks": PURPLE,
    "batch norm": ORANGE,  # the batch-norm cost's colour of notebooks 03 and 04
    "loss": YELLOW,
    "gradient buffers": GREY,
}
#: the two BNN training algorithms (``qatcore.bnn.models.MODES``) and what a waterfall's choice removes
MODES = {"standard": BLUE, "low_memory": VERMILLION}
REMOVED = LIGHT_GREY
#: export sizes beside their float32 reference, and the runtimes of the latency benchmark
EXPORTS = {"float32": LIGHT_GREY, "export": BLUE}
RUNTIMES = {"eager (QAT)": ORANGE, "eager (frozen)": SKY_BLUE, "onnxruntime": GREEN}


def colour(group: Mapping[str, str], name: str) -> str:
    """The colour of ``name`` in ``group`` (one of this module's dictionaries)."""
    return group[check_choice("name", name, sorted(group))]


def colours(names: Iterable[str], group: Mapping[str, str] | None = None) -> dict[str, str]:
    """A colour for each of ``names``: its own in ``group`` where it has one, else the next colour of
    ``SEQUENCE`` that no other of ``names`` holds, so a figure never shows one colour twice."""
    names = list(dict.fromkeys(names))
    group = group or {}
    chosen = {name: group[name] for name in names if name in group}
    free = [c for c in SEQUENCE if c not in chosen.values()]
    rest = [name for name in names if name not in chosen]
    if len(rest) > len(free):
        raise ValueError(
            f"names: at most {len(free)} without a colour of their own, got {len(rest)}"
        )
    chosen.update(zip(rest, free, strict=False))
    return {name: chosen[name] for name in names}


__all__ = [
    "CONVOLUTIONS",
    "ESTIMATORS",
    "EXPORTS",
    "GREY",
    "LADDER",
    "MEMORY",
    "MODES",
    "OPERATIONS",
    "REMOVED",
    "RUNS",
    "RUNTIMES",
    "SEQUENCE",
    "colour",
    "colours",
]
