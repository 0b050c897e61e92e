"""Student copies of the notebooks: solutions cleared by nbgrader's own preprocessors, outputs removed.

``python -m qatcore.course.student [--out build/student] [NOTEBOOK ...]`` (``make student``) writes one
copy per notebook. The exercises are in nbgrader's format (solution cells with ``### BEGIN SOLUTION``
/ ``### END SOLUTION``, locked graded test cells), so a teacher can also run ``nbgrader
generate_assignment`` and ``nbgrader autograde`` on the notebooks unchanged; this module needs no
nbgrader course directory. nbgrader comes with the ``teach`` extra (``pip install -e '.[teach]'``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from qatcore.course.repository import require_extra, require_repository

if TYPE_CHECKING:
    import nbformat

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def _preprocessors():
    try:
        from nbgrader.preprocessors import (
            ClearHiddenTests,
            ClearMarkScheme,
            ClearOutput,
            ClearSolutions,
        )
    except ImportError as missing:  # the optional extra is not installed
        raise ImportError("student copies need nbgrader: pip install -e '.[teach]'") from missing
    return ClearSolutions(), ClearHiddenTests(), ClearMarkScheme(), ClearOutput()


def graded_cells(nb: nbformat.NotebookNode) -> list[dict]:
    """The nbgrader metadata of every graded (autograder test) cell of ``nb``, in order."""
    return [
        dict(c.metadata["nbgrader"])
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade")
        and not c.metadata["nbgrader"].get("solution")
    ]


def solution_cells(nb: nbformat.NotebookNode) -> list[dict]:
    """The nbgrader metadata of every solution cell of ``nb``, in order."""
    return [
        dict(c.metadata["nbgrader"])
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    ]


def student_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with every solution region replaced by nbgrader's stub and every output cleared."""
    import nbformat

    if not solution_cells(nb):
        raise ValueError("the notebook has no nbgrader solution cells")
    nb = nbformat.from_dict(nb)  # a deep copy: the preprocessors work in place
    for preprocessor in _preprocessors():
        nb, _ = preprocessor.preprocess(nb, {})
    return nb


def write_student_copies(out: Path, notebooks: Iterable[Path] | None = None) -> list[Path]:
    """Write the student copy of each notebook (default: every course notebook) to ``out``."""
    import nbformat

    paths = (
        sorted(NOTEBOOKS.glob("0*.ipynb")) if notebooks is None else [Path(p) for p in notebooks]
    )
    if not paths:
        raise ValueError(f"no notebooks found under {NOTEBOOKS}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = out / path.name
        nbformat.write(student_copy(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qatcore.course.student", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to copy (default: all of notebooks/)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "student", help="folder for the copies"
    )
    args = parser.parse_args(argv)
    command = "python -m qatcore.course.student"
    if not args.notebooks:  # the default is every notebook of the course
        require_repository(command)
    require_extra(command, "course", "nbformat")
    require_extra(command, "teach", "nbgrader")
    for path in write_student_copies(args.out, args.notebooks or None):
        print(path)


if __name__ == "__main__":
    main()
