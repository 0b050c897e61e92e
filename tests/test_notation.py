"""One notation: the symbols each notebook's markdown defines agree with docs/glossary.md, and every
``qatcore.…`` name the markdown mentions imports."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from qatcore.course import notation

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_glossary_table_is_read():
    table = notation.glossary()
    for symbol in ("b", "m", "Δ", "u", "v", "α", "M", "s", "t", "z", "q", "STE"):
        assert symbol in table, symbol
    assert "bit width" in table["b"] and "offset" in table["u"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_symbols_a_notebook_defines_agree_with_the_glossary(path):
    assert notation.disagreements(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_qatcore_name_in_the_markdown_imports(path):
    assert notation.unimportable_names(path) == []


def _write(tmp_path, *markdown):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text) for text in markdown])
    nbformat.write(nb, tmp_path / "planted.ipynb")
    return tmp_path / "planted.ipynb"


def test_planted_notation_violations_are_found(tmp_path):
    path = _write(
        tmp_path,
        "Here `u` is the offset of a weight from its bin's threshold, and `Δ` is the step between levels.",
        "The layer computes `a·x + b`, where `b` is the bias of the layer.",
        "| `u` | the momentum sum |",
        "Let `ξ` denote a point; `ξ` is a point between `w` and its update.",
    )
    found = notation.disagreements(path)
    assert not any("cell 0" in line for line in found), "definitions that agree pass"
    assert any("cell 1 defines `b` as 'bias of the layer'" in line for line in found)
    assert any("cell 2 defines `u`" in line for line in found), "a notation table's rows are read"
    assert any("cell 3 defines `ξ`, which the glossary does not have" in line for line in found)


def test_one_letter_for_the_momentum_coefficient_and_another_for_the_batch_norm_mean(tmp_path):
    """Notebook 01's momentum argument once wrote the momentum coefficient as `μ`, the batch norm's mean
    in the glossary. The glossary gives it `λ`, and a notebook that defines `μ` as the coefficient again,
    in either form, is found."""
    table = notation.glossary()
    assert "momentum coefficient" in table["λ"] and "momentum" not in table["μ"]
    path = _write(
        tmp_path,
        "Momentum sums `Σ_k λ^k g_k`, where `λ` is the momentum coefficient; `μ` is the mean of a batch norm.",
        "Momentum sums `Σ_k μ^k g_k`, where `μ` is the momentum coefficient.",
        "Heavy-ball SGD with the momentum coefficient `μ` sums past gradients.",
        "Heavy-ball SGD with the momentum coefficient `λ` sums past gradients.",
    )
    found = notation.disagreements(path)
    assert not any("cell 0" in line or "cell 3" in line for line in found), found
    assert any("cell 1 defines `μ` as 'momentum coefficient'" in line for line in found), found
    assert any("cell 2 defines `μ` as 'the momentum coefficient'" in line for line in found), found


def test_planted_module_names_that_do_not_import_are_found(tmp_path):
    path = _write(
        tmp_path,
        "See `qatcore.cost.ace.count`, `qatcore.estimators.theory` and `qatcore.quantizers.levels`.",
        "See `qatcore.trajectory` and `qatcore.ace.count` and `qatcore.quantizers.no_such`.",
    )
    found = notation.unimportable_names(path)
    assert not any("cell 0" in line for line in found)
    names = {line.split(" names ")[1].split(",")[0] for line in found}
    assert names == {"qatcore.trajectory", "qatcore.ace.count", "qatcore.quantizers.no_such"}
