"""``python -m qatcore.course.lint NOTEBOOK…``: what the test suite expects of a committed notebook.

Every code cell was executed (its outputs are committed, so strict nbval has something to
compare); no timing metadata (a rerun would change the file where no output changed); test
machinery lives in cell tags, never in comments students read (``# NBVAL_…``); the tags are ones
the suite knows; and what students read (markdown, code, printed output) speaks of the subject, not
of the test suite, bench scripts, CI, the machine or how the notebook was written
(``tooling_mentions``; ``drawn_text_mentions`` applies the same rule to the text the package's
figure and dashboard modules draw). Used by the pre-commit hook and by the tests. Without file names it checks
every notebook of the course repository.

The pre-commit hook runs this file as a script with nbformat alone, no qatcore installed, and gives it
file names: so nbformat is imported where it is used, and ``qatcore.course.repository`` only without
file names or without nbformat (to find the course's notebooks, or say in one line what is missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nbformat

COMMAND = "python -m qatcore.course.lint"

KNOWN_TAGS = {
    "parameters",
    "injected-parameters",
    "nbval-ignore-output",
    "nbval-skip",
    "raises-exception",
}


#: What student-facing text must not talk about: the test suite, bench scripts, CI, the machine the
#: notebook last ran on, or how and when the notebook was written. Each pattern with its reason.
TOOLING_WORDS = (
    (r"\btests?/\w|\btest_\w+\.py|\btest suite\b|\bpytest\b|\bnbval\b", "the test suite"),
    (r"\bbench/|\bbench_\w+|\bbench scripts?\b|\bthe bench'?s?\b", "bench scripts"),
    (r"\bCI\b|continuous integration", "CI"),
    (r"\bthis (machine|cpu|computer|laptop|box)\b", "the machine it ran on"),
    (
        r"(when|while) (this|the) (notebook|course|text) was (written|made|prepared)|"
        r"\bwhile writing (this|it)\b|\bnot at hand\b|could not (be )?consult",
        "how or when the notebook was written",
    ),
)


def _student_text(cell: nbformat.NotebookNode) -> str:
    """What a student reads of ``cell``: its source and, for code, its printed output."""
    text = [cell.source]
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            text.append(output.get("text", ""))
        elif "data" in output:
            text.append(str(output["data"].get("text/plain", "")))
    return "\n".join(text)


def tooling_mentions(path: Path) -> list[str]:
    """Student-facing text of the notebook at ``path`` that speaks of tooling instead of the subject."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(nb.cells):
        text = _student_text(cell)
        for pattern, what in TOOLING_WORDS:
            for match in re.finditer(pattern, text, flags=re.IGNORECASE):
                found.append(f"{path.name}: cell {index} speaks of {what}: {match.group(0)!r}")
    return found


def drawn_text_mentions(module: Path) -> list[str]:
    """Text a figure or dashboard module draws (its string literals and f-string parts, not its
    docstrings) that speaks of tooling: a title, a label or a line a student reads in a notebook's
    figure, which the notebook's own text checks cannot see."""
    import ast

    tree = ast.parse(module.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            for pattern, what in TOOLING_WORDS:
                for match in re.finditer(pattern, node.value, flags=re.IGNORECASE):
                    found.append(
                        f"{module.name}:{node.lineno} draws text that speaks of {what}: "
                        f"{match.group(0)!r}"
                    )
    return found


def problems(path: Path) -> list[str]:
    """What is wrong with the committed notebook at ``path``, one line each (empty when nothing)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        where = f"{path.name}: code cell {index}"
        if cell.source.strip() and cell.execution_count is None:
            found.append(f"{where} was not executed (commit the notebook with its outputs)")
        if "execution" in cell.metadata:
            found.append(f"{where} carries timing metadata (run it through qatcore reproduce)")
        if "NBVAL_" in cell.source:
            found.append(f"{where} has an NBVAL comment: use the cell tag instead")
        unknown = set(cell.metadata.get("tags", [])) - KNOWN_TAGS
        if unknown:
            found.append(
                f"{where} has unknown tags {sorted(unknown)} (known: {sorted(KNOWN_TAGS)})"
            )
        if any(
            o.get("output_type") == "error" for o in cell.outputs
        ) and "raises-exception" not in cell.metadata.get("tags", []):
            found.append(f"{where} stored an error")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Check committed notebooks: every cell executed, no timing metadata, known cell tags, and "
        "student-facing text that speaks of the subject.",
    )
    parser.add_argument(
        "notebooks", nargs="*", help="notebook files (default: every notebook of the course)"
    )
    paths = [Path(p) for p in parser.parse_args(argv).notebooks]
    if not paths or importlib.util.find_spec("nbformat") is None:
        from qatcore.course.repository import ROOT, require_extra, require_repository

        if not paths:  # every notebook of the course
            require_repository(COMMAND)
            paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
        require_extra(COMMAND, "course", "nbformat")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    found = [line for path in paths for line in problems(path) + tooling_mentions(path)]
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
