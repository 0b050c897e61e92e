"""The exercises as a teacher grades them: nbgrader ``generate_assignment`` then ``autograde`` in a scratch
course directory, with the project's ``nbgrader_config.py``.

Three submissions per notebook: the instructor's notebook (solutions; it must score every automatic point
and run without an error), the student copy as released (blank: 0 points, errors only in the graded test
cells), and a copy whose answers only call qatcore's own implementation (a shortcut: less than full marks).
All three run at the quick parameters, as the student-copy test does: the exercises do not depend on them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from qatcore.course import student

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
NBGRADER = [sys.executable, "-m", "nbgrader"]

# Each exercise answered by delegating to the package (what a student might paste in).
SHORTCUTS = {
    "ex00-levels": "from qatcore.quantizers import levels\nreturn levels(bits, m)",
    "ex00-quantize": "from qatcore.quantizers import uniform_quantize\nreturn uniform_quantize(w, bits, m)",
    "ex00-alpha": "return estimators.get(name).alpha(bits, m)",
    "ex01-pwl-alpha": "from qatcore import estimators\n"
    "return sp.nsimplify(estimators.get('pwl', floor=float(floor)).alpha(2, 1.0))",
    "ex01-pwl-map": "from qatcore import estimators\n"
    "return estimators.get('pwl', floor=floor).weight_map(w, bits, m)",
    "ex01-step": "from qatcore.estimators import theory\n"
    "e = theory.sgd_step_expansion()\nreturn e.expressions['eta1'], e.expressions['eta2']",
    "ex02-agreement": "from qatcore.estimators import trajectory\n"
    "return trajectory.quantized_weight_agreement(trajectory.level_indices(w_a, bits, m), "
    "trajectory.level_indices(w_b, bits, m))",
    "ex02-alignment": "from qatcore.estimators import trajectory\n"
    "return trajectory.weight_alignment_error(mapped_custom, ste, m)",
    "ex02-adjusted": "from qatcore.estimators.equivalence import remapped_run\n"
    "from qatcore.optimizers import OptimizerConfig\n"
    "if remapped_run(OptimizerConfig(optimizer)) != 'adjusted':\n    return w0, lr\n"
    "e = estimators.get(name)\nreturn e.weight_map(w0, bits, m), e.alpha(bits, m) * lr",
    "ex03-conv-ace": "import torch\nfrom torch import nn\nfrom qatcore.cost import ace\n"
    "conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False)\n"
    "return ace.count(conv, torch.zeros(1, c_in, size, size), bits=(w_bits, a_bits)).totals['ace']",
    "ex03-relu6-block": "import torch\nfrom torch import nn\nfrom qatcore.cost import ace\n"
    "block = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6())\n"
    "return ace.count(block, torch.zeros(1, c_in, size, size), bits=(bits, bits), float_bits=32).totals['acev2']",
    "ex03-acev2-cost": "from qatcore.cost.cost_models import ACEv2\nreturn ACEv2().cost(op)",
    "ex04-fold-bn": "from qatcore.cost.pikelpn_layers import fold_batch_norm as fold\nreturn fold(bn)",
    "ex04-pow2-scale": "from qatcore.cost.pikelpn_layers import double_quantize_scale\n"
    "return double_quantize_scale(scale, 'pow2')",
    "ex04-per-channel": "from qatcore import estimators\nfrom qatcore.cost.pikelpn_layers import quantize_on_range\n"
    "return quantize_on_range(w, w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True), bits, "
    "estimators.get('ste'))",
    "ex05-mask-memory": "from qatcore.bnn.memory import STANDARD, Choices, bytes_by_kind, memory_rows\n"
    "choices = Choices(bit_masks=True) if bits == 1 else STANDARD\n"
    "return bytes_by_kind(memory_rows(None, batch, choices, layer_shapes(model)))['masks']",
    "ex05-pack-signs": "from qatcore.bnn import packing\nreturn packing.pack_signs(x).numpy()",
    "ex05-po2": "from qatcore.bnn.functions import po2_quantize\nreturn po2_quantize(dy)",
    "ex06-xnor": "from qatcore.export import reference\n"
    "valid = np.packbits(np.ones(n, bool))[None]\n"
    "return int(reference.xnor_popcount(x_bits[None], valid, w_bits[None])[0, 0])",
    "ex06-codes": "from qatcore.quantizers import step_size, uniform_quantize\n"
    "return torch.round(2 * uniform_quantize(w, bits, m) / step_size(bits, m)).long()",
    "ex06-threshold": "import numpy as np\nfrom qatcore.export import binary\nfrom qatcore.export.ops import Op\n"
    "bn = Op('batchnorm', 'bn', {'gamma': np.array([s]), 'var': np.array([1.0]), 'eps': 0.0, "
    "'beta': np.array([beta]), 'mean': np.array([mu])})\n"
    "op = binary.threshold('t', bn, 10**6)\nreturn int(op.attrs['tau'][0]), int(op.attrs['direction'][0])",
}

SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n?", re.S | re.M)


def with_shortcuts(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The instructor's notebook with every code solution region replaced by its shortcut."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            body = SHORTCUTS[meta["grade_id"]]

            def indented(match, body=body):
                return "".join(match.group(1) + line + "\n" for line in body.splitlines())

            cell.source = SOLUTION.sub(indented, cell.source)
    return nb


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        QATCORE_STRICT="0",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        PATH=os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        ),  # its alembic
    )
    done = subprocess.run(
        [*NBGRADER, *args, "--CourseDirectory.root=" + str(course)],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_every_exercise_has_a_shortcut_to_test_against():
    code_ids = {
        c.metadata["nbgrader"]["grade_id"]
        for path in NOTEBOOKS
        for c in nbformat.read(path, as_version=4).cells
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
    }
    assert code_ids == set(SHORTCUTS), (
        f"exercises without a shortcut: {sorted(code_ids ^ set(SHORTCUTS))}"
    )


def test_shortcuts_replace_only_the_solution_region():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        "def f(x):\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n"
    )
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "ex05-po2"}
    nb.cells = [cell]
    assert with_shortcuts(nb).cells[0].source == (
        "def f(x):\n    from qatcore.bnn.functions import po2_quantize\n    return po2_quantize(dy)\n"
    )


def _autograded_scores(course: Path, assignment: str) -> dict[str, dict[str, tuple[float, float]]]:
    """{student: {notebook: (automatic score, automatic maximum)}} from the gradebook."""
    from nbgrader.api import Gradebook

    scores: dict[str, dict[str, tuple[float, float]]] = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for submission in gradebook.assignment_submissions(assignment):
            for notebook in submission.notebooks:
                scores.setdefault(submission.student.id, {})[notebook.name] = (
                    notebook.code_score,
                    notebook.max_code_score,
                )
    return scores


def _errors_outside_graded_tests(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    graded = {g["grade_id"] for g in student.graded_cells(nb)}
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors and cell.metadata.get("nbgrader", {}).get("grade_id") not in graded:
            found.append(f"{path.name}: {errors[0].ename} in {cell.source[:80]!r}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_autograde_gives_solutions_full_marks_blanks_zero_and_shortcuts_less(tmp_path, path):
    from qatcore.course.reproduce import QUICK_PARAMETERS, inject_parameters

    course, assignment = tmp_path / "course", "ps1"
    (course / "source" / assignment).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    shutil.copy(path, course / "source" / assignment / path.name)
    nbgrader(course, "generate_assignment", assignment, "--force")
    released = nbformat.read(course / "release" / assignment / path.name, as_version=4)
    assert not any(
        "BEGIN HIDDEN TESTS" in c.source or "Rubric" in c.source for c in released.cells
    ), "hidden tests and rubrics stay in the instructor copy"

    instructor = nbformat.read(path, as_version=4)
    blank, shortcut = nbformat.from_dict(released), with_shortcuts(instructor)
    for copy in (instructor, blank, shortcut):  # the exercises do not depend on the parameters
        inject_parameters(copy, QUICK_PARAMETERS)
    for name, nb in (("solution", instructor), ("blank", blank), ("shortcut", shortcut)):
        target = course / "submitted" / name / assignment / path.name
        target.parent.mkdir(parents=True)
        nbformat.write(nb, target)
    nbgrader(course, "autograde", assignment, "--force")

    scores = {
        who: notebooks[path.stem]
        for who, notebooks in _autograded_scores(course, assignment).items()
    }
    score, maximum = scores["solution"]
    assert maximum >= 3 and score == maximum, f"solutions: {score} of {maximum}"
    assert scores["blank"][0] == 0, f"a blank copy: {scores['blank'][0]} of {maximum}"
    assert scores["shortcut"][0] < maximum, (
        f"answers that only call qatcore: {scores['shortcut'][0]} of {maximum}"
    )
    autograded = course / "autograded"
    assert _errors_outside_graded_tests(autograded / "solution" / assignment / path.name) == []
    assert not any(
        o.output_type == "error"
        for c in nbformat.read(autograded / "solution" / assignment / path.name, as_version=4).cells
        if c.cell_type == "code"
        for o in c.outputs
    ), "the solutions run without an error"
    assert _errors_outside_graded_tests(autograded / "blank" / assignment / path.name) == []
