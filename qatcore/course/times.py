"""How long a notebook takes a student, by one stated rule rather than a guess.

Reading at a study pace of ``WORDS_PER_MINUTE`` words of markdown a minute, plus ``GRADED_MINUTES`` for each
auto-graded exercise and for each written answer, ``WIDGET_MINUTES`` for each widget (predict, try, read the
answer) and for each open exercise of the closing list, plus ``RUN_MINUTES`` for running the notebook; rounded up
to five minutes. ``stated_minutes`` reads the time a notebook states ("**Time:** about N minutes").
"""

from __future__ import annotations

import math
import re

import nbformat

WORDS_PER_MINUTE = 100
GRADED_MINUTES = 10
WIDGET_MINUTES = 5
RUN_MINUTES = 2
RULE = (
    f"reading at {WORDS_PER_MINUTE} words a minute, {GRADED_MINUTES} minutes for each graded exercise and "
    f"written answer, {WIDGET_MINUTES} for each widget and each open exercise, and {RUN_MINUTES} to run it"
)
_STATED = re.compile(r"\*\*Time:\*\* about (\d+) minutes")
_WIDGET = re.compile(r"\b\w+_explorer\(")
_OPEN = re.compile(r"^\d+\. ", re.MULTILINE)


def parts(nb: nbformat.NotebookNode) -> dict[str, int]:
    """What the rule counts in ``nb``: words, graded exercises, written answers, widgets, open exercises."""
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    exercises_list = [
        c
        for c in nb.cells
        if c.cell_type == "markdown" and re.search(r"\*\*Exercises|## Exercises", c.source)
    ]
    return {
        "words": sum(
            len(c.source.split())
            for c in nb.cells
            if c.cell_type == "markdown" and "nbgrader" not in c.metadata
        ),
        "graded": sum(c.cell_type == "code" for c in graded),
        "written": sum(c.cell_type == "markdown" for c in graded),
        "widgets": sum(
            c.cell_type == "code"
            and "nbgrader" not in c.metadata
            and bool(_WIDGET.search(c.source))
            for c in nb.cells
        ),
        "open": sum(len(_OPEN.findall(c.source.split("Exercises", 1)[1])) for c in exercises_list),
    }


def study_minutes(nb: nbformat.NotebookNode) -> int:
    """The rule's time for ``nb``, in minutes, rounded up to a multiple of five."""
    p = parts(nb)
    minutes = (
        p["words"] / WORDS_PER_MINUTE
        + GRADED_MINUTES * (p["graded"] + p["written"])
        + WIDGET_MINUTES * (p["widgets"] + p["open"])
        + RUN_MINUTES
    )
    return 5 * math.ceil(minutes / 5)


def stated_minutes(nb: nbformat.NotebookNode) -> int | None:
    """The time the notebook states for itself, or None."""
    for cell in nb.cells:
        found = _STATED.search(cell.source)
        if found:
            return int(found.group(1))
    return None
