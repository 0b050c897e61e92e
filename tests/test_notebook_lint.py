"""The committed notebooks are what the suite expects: executed, tagged, no timing metadata."""

from pathlib import Path

import nbformat
import pytest

from qatcore.course import lint

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path):
    assert lint.problems(path) == []


def test_lint_names_each_problem(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "# NBVAL_IGNORE_OUTPUT\nx = 1", metadata={"tags": ["nbval-ignor-output"]}
            ),
            nbformat.v4.new_code_cell(
                "y = 2", execution_count=2, metadata={"execution": {"iopub.status.idle": "t"}}
            ),
        ]
    )
    nbformat.write(nb, tmp_path / "bad.ipynb")
    found = "\n".join(lint.problems(tmp_path / "bad.ipynb"))
    for words in (
        "code cell 0 was not executed",
        "NBVAL comment",
        "unknown tags ['nbval-ignor-output']",
        "code cell 1 carries timing metadata",
    ):
        assert words in found
    assert lint.main([str(tmp_path / "bad.ipynb")]) == 1
    assert lint.main([str(p) for p in NOTEBOOKS]) == 0
