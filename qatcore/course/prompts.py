"""What a prediction prompt asks the reader to try must be a setting its widget can reach.

A notebook's prompt ("**Predict first.** …", with its answer in a ``<details>`` block) writes each
setting it asks for as a Markdown code span ``control = value``, in the words of the widget's own
labels: ``bits = 4``, ``η = 10⁻²``, ``estimator = approx_sign``. ``prompts(nb)`` finds each prompt,
its answer and the dashboard it belongs to (the first code cell after it that calls a
``…_explorer(…)``); ``requests(text)`` reads the settings. ``unreachable(requested, controls)`` lists
those the controls cannot be set to: a name no control has, a value outside a slider's range or off
its steps, an option a menu does not offer. ``unstated(text)`` lists sentences of a prompt that ask
for a change in words ("tenfold", "twice", "halve") without the value it leads to; ``problems``
applies all three to one prompt.

Controls are read by their attributes (``description``, ``min``/``max``/``step``, ``base`` for a log
slider, ``options``), so this module needs no widget library; the tests build the notebooks'
dashboards and pass their controls in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nbformat

#: "**Predict first.**" opens a prompt; its answer follows in the same cell.
PROMPT = "**Predict first.**"
#: a Markdown code span, and a setting inside one: ``control = value``
CODE = re.compile(r"`([^`\n]*)`")
SETTING = re.compile(r"^\s*([^=]+?)\s*=\s*([^=]+?)\s*$")
#: a dashboard's builder called in a code cell
BUILDER = re.compile(r"\b(\w+_explorer)\(")
#: words that ask for a change by a factor; the sentence must then state the value it leads to
RELATIVE = re.compile(
    r"\b(?:[Tt]en|[Hh]undred|[Tt]wo|[Tt]hree|[Ff]our)fold\b|\b(?:twice|double[sd]?|halve[sd]?)\b"
)
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
#: relative tolerance on a continuous slider: its readout cannot show a value closer than this
TOLERANCE = 0.01


@dataclass(frozen=True)
class Prompt:
    """One prediction prompt: its cell, what it asks (before the answer), its answer (the ``<details>``
    block, in the same cell or a later one), and the builder of its dashboard."""

    cell: int
    asked: str
    answer: str
    builder: str | None


def prompts(nb: nbformat.NotebookNode) -> list[Prompt]:
    """Every prediction prompt in ``nb`` with its answer (the first ``<details>`` block from the prompt on)
    and the dashboard builder of the first code cell after it that calls one (``None`` when none follows)."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or PROMPT not in cell.source:
            continue
        asked, _, rest = cell.source[cell.source.index(PROMPT) :].partition("<details>")
        answer = rest or next(
            (
                later.source
                for later in nb.cells[index + 1 :]
                if later.cell_type == "markdown" and "<details>" in later.source
            ),
            "",
        )
        builder = next(
            (
                match.group(1)
                for later in nb.cells[index + 1 :]
                if later.cell_type == "code"
                for match in [BUILDER.search(later.source)]
                if match
            ),
            None,
        )
        found.append(Prompt(index, asked, answer, builder))
    return found


def parse_value(text: str) -> float | str:
    """``"10⁻²"`` → 0.01, ``"1e-3"`` → 0.001, ``"6.5"`` → 6.5; anything else is an option's name."""
    plain = text.strip().replace("−", "-").replace("·", "*").replace(" ", "")
    power = re.fullmatch(r"(?:([\d.]+)\*)?10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+)", plain)
    if power:
        return float(power.group(1) or 1) * 10.0 ** int(power.group(2).translate(_SUPERSCRIPT))
    try:
        return float(plain)
    except ValueError:
        return text.strip()


def requests(text: str) -> list[tuple[str, float | str]]:
    """The ``(control, value)`` settings written as code spans ``control = value`` in ``text``, in order."""
    return [
        (match.group(1), parse_value(match.group(2)))
        for span in CODE.findall(text)
        for match in [SETTING.match(span)]
        if match
    ]


def unstated(text: str) -> list[str]:
    """Sentences of ``text`` that ask for a change by a factor in words but state no setting."""
    sentences = re.split(r"(?<=[.?!])\s+", text)
    return [s.strip() for s in sentences if RELATIVE.search(s) and not requests(s)]


def _reachable(control: Any, value: float | str) -> bool:
    options = getattr(control, "options", None)
    if options is not None:  # a menu, buttons or a selection slider: one of its options
        labels = [o[0] if isinstance(o, tuple) else o for o in options]
        return any(str(label) == str(value) or _same(label, value) for label in labels)
    if isinstance(getattr(control, "value", None), bool):  # a check box
        return str(value).lower() in ("true", "false", "on", "off")
    if isinstance(value, str) or not hasattr(control, "min"):
        return False
    base = getattr(control, "base", None)
    if base is not None:  # a log slider: min, max and step are exponents
        if value <= 0:
            return False
        position = math.log(value, base)
        low, high, step = control.min, control.max, control.step
        if not low - 1e-9 <= position <= high + 1e-9:
            return False
        nearest = base ** (low + round((position - low) / step) * step)
        return abs(nearest / value - 1) <= TOLERANCE
    low, high, step = control.min, control.max, control.step
    if not low - 1e-9 <= value <= high + 1e-9:
        return False
    steps = (value - low) / step
    return abs(steps - round(steps)) * step <= TOLERANCE * max(abs(value), step)


def _same(option: Any, value: float | str) -> bool:
    try:
        return float(option) == float(value)
    except (TypeError, ValueError):
        return False


def unreachable(requested: Iterable[tuple[str, float | str]], controls: Iterable[Any]) -> list[str]:
    """Each requested setting the ``controls`` cannot be set to, one line each: a name no control has
    (by its ``description``), a value outside a slider's range or off its steps, an option not offered."""
    by_name = {getattr(c, "description", ""): c for c in controls}
    found = []
    for name, value in requested:
        control = by_name.get(name)
        if control is None:
            found.append(
                f"`{name} = {value}`: no control is labelled {name!r} (there are {sorted(by_name)})"
            )
        elif not _reachable(control, value):
            found.append(
                f"`{name} = {value}`: {name!r} cannot be set to {value!r} ({describe(control)})"
            )
    return found


def problems(prompt: Prompt, controls: Iterable[Any]) -> list[str]:
    """What is wrong with one prompt against its widget's ``controls``, one line each: every setting the
    prompt asks for must be reachable; a setting its answer suggests is checked when it names a control
    (the answer also writes formulas such as ``Q̂′ = 1``); a change asked in words must state its value."""
    controls = list(controls)
    names = {getattr(c, "description", "") for c in controls}
    suggested = [(name, value) for name, value in requests(prompt.answer) if name in names]
    return (
        unreachable(requests(prompt.asked), controls)
        + unreachable(suggested, controls)
        + [f"asks for a change without its value: {s!r}" for s in unstated(prompt.asked)]
    )


def describe(control: Any) -> str:
    """A control's range or options, as a line says it."""
    if getattr(control, "options", None) is not None:
        return f"options {[o[0] if isinstance(o, tuple) else o for o in control.options]}"
    if getattr(control, "base", None) is not None:
        return (
            f"{control.base:g}^{control.min:g} to {control.base:g}^{control.max:g}, "
            f"exponent steps of {control.step:g}"
        )
    if hasattr(control, "min"):
        return f"{control.min:g} to {control.max:g} in steps of {control.step:g}"
    return type(control).__name__
