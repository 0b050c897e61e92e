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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_text_speaks_of_the_subject(path):
    assert lint.tooling_mentions(path) == []


def test_student_text_lint_names_each_planted_violation(tmp_path):
    planted = {
        "the test suite": "`tests/test_theory.py` checks this too.",
        "bench scripts": "The seed study is run by `bench/bench_pikelpn_seeds.py`.",
        "CI": "CI runs this notebook at the quick parameters.",
        "the machine it ran on": "MNIST is not on this machine, so we use digits.",
        "how or when the notebook was written": "The paper's text was not at hand when this notebook was written.",
    }
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                "A quantizer has `2^b` levels; its tests are in the exercises."
            )
        ]
        + [nbformat.v4.new_markdown_cell(text) for text in planted.values()]
        + [
            nbformat.v4.new_code_cell(
                "print(1)",
                execution_count=1,
                outputs=[
                    nbformat.v4.new_output(
                        "stream", text="✔ verified: in this CPU's run the peak is lower\n"
                    )
                ],
            )
        ]
    )
    nbformat.write(nb, tmp_path / "planted.ipynb")
    found = lint.tooling_mentions(tmp_path / "planted.ipynb")
    for index, what in enumerate(planted, start=1):
        assert any(
            line.startswith(f"planted.ipynb: cell {index} speaks of {what}") for line in found
        ), what
    assert any("cell 6 speaks of the machine it ran on" in line for line in found), (
        "printed output is read too"
    )
    assert not any("cell 0 " in line for line in found), "the subject's own words pass"
    assert lint.main([str(tmp_path / "planted.ipynb")]) == 1


def test_lint_help_and_a_missing_notebook_are_answered_in_words(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        lint.main(["--help"])
    assert exit_.value.code == 0
    assert "notebook files" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        lint.main([str(tmp_path / "absent.ipynb")])
    assert exit_.value.code == 2
    assert "no such notebook" in capsys.readouterr().err


#: the modules whose strings end up drawn in a notebook: figure titles, labels, dashboard lines
DRAWING = [
    *sorted((ROOT / "qatcore").glob("*/plots.py")),
    *sorted((ROOT / "qatcore").glob("*/widgets.py")),
    ROOT / "qatcore" / "live.py",
]


@pytest.mark.parametrize("module", DRAWING, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_figures_and_dashboards_speak_of_the_subject(module):
    assert lint.drawn_text_mentions(module) == []


def test_drawn_text_is_checked_and_docstrings_are_not(tmp_path):
    module = tmp_path / "plots.py"
    module.write_text(
        '"""Figures; the timings come from bench/bench_export.py."""\n\n\n'
        "def latency(axis):\n"
        '    """Its title once named bench/bench_export.py."""\n'
        '    axis.set_title("latency (bench/bench_export.py)")\n'
        '    axis.set_xlabel(f"batch {1} on this machine")\n'
    )
    found = lint.drawn_text_mentions(module)
    assert [line.split(" draws")[0] for line in found] == ["plots.py:6", "plots.py:6", "plots.py:7"]
    assert "bench scripts" in found[0] and "the machine it ran on" in found[2]
