"""``python -m qatcore.course.lint NOTEBOOK…``: what the test suite expects of a committed notebook.

Every code cell was executed (its outputs are committed, so strict nbval has something to
compare); no timing metadata (a rerun would change the file where no output changed); test
machinery lives in cell tags, never in comments students read (``# NBVAL_…``); the tags are ones
the suite knows. Used by the pre-commit hook and by the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

KNOWN_TAGS = {
    "parameters",
    "injected-parameters",
    "nbval-ignore-output",
    "nbval-skip",
    "raises-exception",
}


def problems(path: Path) -> list[str]:
    """What is wrong with the committed notebook at ``path``, one line each (empty when nothing)."""
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
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)] or sorted(
        Path("notebooks").glob("*.ipynb")
    )
    found = [line for path in paths for line in problems(path)]
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
