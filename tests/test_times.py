"""Each notebook states the time the course's rule gives, and the README and the site agree with it; the
README's run times are the ones ``bench/bench_notebooks.py`` last measured."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from qatcore.course import times

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_states_the_rules_time(path):
    nb = nbformat.read(path, as_version=4)
    assert times.stated_minutes(nb) == times.study_minutes(nb), times.parts(nb)


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_course_tables_agree_with_the_notebooks(page):
    rows = dict(
        re.findall(r"^\| \[(\d\d) · .*\| (\d+) min \|$", (ROOT / page).read_text(), flags=re.M)
    )
    assert len(rows) == len(NOTEBOOKS)
    for path in NOTEBOOKS:
        assert int(rows[path.name[:2]]) == times.stated_minutes(
            nbformat.read(path, as_version=4)
        ), path.name


def test_the_readmes_run_times_are_the_measured_ones():
    measured = json.loads((ROOT / "bench/results/notebooks.json").read_text())
    seconds = {name[:2]: row["seconds"] for name, row in measured["notebooks"].items()}
    quoted = re.search(
        r"they take (\d+)–(\d+) s each \((\d\d) is the longest\) and about (\d+) min for the whole course",
        " ".join((ROOT / "README.md").read_text().split()),
    )
    assert quoted, "README's sentence on run times changed: update this test with it"
    low, high, longest, minutes = quoted.groups()
    assert (int(low), int(high)) == (round(min(seconds.values())), round(max(seconds.values())))
    assert longest == max(seconds, key=seconds.get)
    assert int(minutes) == round(sum(seconds.values()) / 60)
    assert set(seconds) == {path.name[:2] for path in NOTEBOOKS}


def test_the_rule_counts_what_it_says():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("word " * 1000 + "\n**Time:** about 5 minutes"),
            nbformat.v4.new_code_cell("bit_width_explorer(model, x)"),
            nbformat.v4.new_markdown_cell("## Exercises\n1. one\n2. two"),
        ]
    )
    assert times.parts(nb) == {
        "words": 1000 + 4 + 6,
        "graded": 0,
        "written": 0,
        "widgets": 1,
        "open": 2,
    }
    assert times.study_minutes(nb) == 30  # 10.1 + 5·(1 widget + 2 open) + 2 = 27.1, up to 30
    assert times.stated_minutes(nb) == 5, "a notebook can state a time the rule does not give"
    graded = nbformat.v4.new_code_cell("assert True")
    graded.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 1}
    nb.cells.append(graded)
    assert times.study_minutes(nb) == 40
