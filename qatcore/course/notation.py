"""One notation for the course: ``docs/glossary.md`` is its table, and the notebooks keep to it.

``glossary()`` reads the table (and the terms list) into ``{symbol: meaning}``. ``disagreements(path)``
lists each symbol a notebook's markdown defines ("`x` is the …", "where `x` is a …", a row "| `x` | … |" of
a notation table, "the momentum coefficient `x`") that the glossary
does not have, or defines with none of the glossary's words for it. ``unimportable_names(path)`` lists
each ``qatcore.…`` name in a notebook's markdown that does not import.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import nbformat

from qatcore.course.grading import resolve_name

ROOT = Path(__file__).resolve().parents[2]
GLOSSARY = ROOT / "docs" / "glossary.md"

#: "`x` is the …", "where `x` is a …", "`x` denotes …": a symbol of at most four characters, defined.
DEFINITION = re.compile(
    r"`([^`\s]{1,4})`\s+(?:is|denotes|stands for|means)\s+(?:the|a|an)\s+([^.;:\n]{3,100})"
)
#: "the momentum coefficient `x`", "a positive constant `x`": a symbol named by the noun before it. Only
#: nouns that introduce a letter of their own: "the rate `αη`" names an expression, not a symbol.
NAMED = re.compile(
    r"\b(?:the|a|an|with|its|their)\s+((?:[\w′-]+\s+){0,3}?(?:coefficient|constant|parameter)s?)"
    r"\s+`([^`\s]{1,4})`"
)
#: A row of a notation table in a notebook: "| `x` | meaning |".
TABLE_ROW = re.compile(r"^\|\s*`([^`]{1,4})`\s*\|\s*([^|]+)\|", re.MULTILINE)
NAME = re.compile(r"\bqatcore(?:\.[A-Za-z_]\w*)+")
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
_COMMON = {
    "that",
    "this",
    "with",
    "from",
    "each",
    "every",
    "what",
    "which",
    "where",
    "when",
    "than",
    "into",
    "onto",
    "over",
    "only",
    "also",
    "value",
    "values",
    "number",
    "one",
    "used",
    "uses",
}


def _words(text: str) -> set[str]:
    return {w.lower().rstrip("s") for w in _WORD.findall(text)} - _COMMON


@cache
def glossary(path: Path = GLOSSARY) -> dict[str, str]:
    """``{symbol: meaning}`` from the notation table (first column, in backticks) and from the terms
    list (``- **x (name)**: …``), the two joined where both speak of one symbol."""
    meanings: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for symbol in re.findall(r"`([^`]+)`", cells[0]):
                meanings[symbol] = meanings.get(symbol, "") + " " + " ".join(cells[1:])
        elif line.startswith("- **"):
            head, _, body = line[4:].partition("**:")
            for symbol in re.findall(r"^([^\s(]{1,4})\s*\(", head):
                meanings[symbol] = meanings.get(symbol, "") + " " + head + " " + body
    return meanings


def definitions(nb: nbformat.NotebookNode) -> list[tuple[int, str, str]]:
    """``(cell index, symbol, what follows)`` for every definition in the markdown of ``nb``."""
    return [
        (index, match.group(1), match.group(2))
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        for pattern in (DEFINITION, TABLE_ROW)
        for match in pattern.finditer(cell.source)
    ] + [
        (index, match.group(2), match.group(1))
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        for match in NAMED.finditer(cell.source)
    ]


def disagreements(path: Path, table: dict[str, str] | None = None) -> list[str]:
    """Definitions in the notebook at ``path`` that the glossary lacks or contradicts, one line each."""
    table = glossary() if table is None else table
    found = []
    for index, symbol, said in definitions(nbformat.read(path, as_version=4)):
        if symbol not in table:
            found.append(
                f"{path.name}: cell {index} defines `{symbol}`, which the glossary does not have"
            )
        elif not _words(said) & _words(table[symbol]):
            found.append(
                f"{path.name}: cell {index} defines `{symbol}` as {said.strip()!r}; "
                f"the glossary: {table[symbol].strip()[:80]!r}"
            )
    return found


def unimportable_names(path: Path) -> list[str]:
    """``qatcore.…`` names in the notebook's markdown that do not import, one line each."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for name in sorted(set(NAME.findall(cell.source))):
            try:
                resolve_name(name)
            except (ValueError, AttributeError) as missing:
                found.append(
                    f"{path.name}: cell {index} names {name}, which does not import ({missing})"
                )
    return found
