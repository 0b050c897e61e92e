"""The committed notebooks pass strict nbval on a CPU other than the one that executed them, and
one machine gives the same outputs twice, the cells nbval skips included.

Trained numbers change in their low digits with the CPU's kernels (AVX-512, AVX2, baseline) and
the thread count. Cells that print them carry the ``nbval-ignore-output`` tag and guard their
claims with ``check()``; everything else must match exactly. This reruns the whole strict pass
with torch's baseline kernels, oneDNN held to SSE4.1 and one thread: another CPU, emulated here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from qatcore.course.reproduce import reproduce

ROOT = Path(__file__).resolve().parent.parent

#: settings under which this machine computes as a different CPU would
OTHER_CPUS = {
    "baseline kernels, SSE4.1, one thread": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "QATCORE_THREADS": "1",
    },
}


def strict_nbval(settings: dict[str, str], workers: int = 2) -> subprocess.CompletedProcess:
    """Strict nbval over notebooks/ in a fresh pytest under ``settings``, notebooks spread over
    ``workers`` processes of one thread each (one notebook stays in one kernel)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "QATCORE_"))}
    env.update(settings, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "notebooks",
        "-q",
        "-p",
        "no:randomly",
        "-m",
        "",
        "-n",
        str(workers),
        "--dist",
        "loadfile",
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OTHER_CPUS))
def test_notebooks_pass_strict_nbval_on_an_emulated_other_cpu(name):
    run = strict_nbval(OTHER_CPUS[name])
    assert run.returncode == 0, f"{name}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "failed" not in run.stdout


#: the same-machine check: a training notebook, shortened (its claims are nbval's to check)
TWICE = ("02", {"EPOCHS": 1, "SEEDS": 1})


def _outputs(cell) -> list:
    """A code cell's outputs as plain data, without the random ids of widget models."""
    kept = []
    for output in cell.outputs:
        output = json.loads(json.dumps(output))
        output.get("data", {}).get("application/vnd.jupyter.widget-view+json", {}).pop(
            "model_id", None
        )
        output.pop("execution_count", None)
        kept.append(output)
    return kept


@pytest.mark.slow
def test_two_executions_of_a_training_notebook_give_identical_outputs_even_where_not_compared(
    tmp_path,
):
    prefix, parameters = TWICE
    executed = []
    for run in ("first", "second"):
        report = reproduce(
            ROOT / "notebooks",
            tmp_path / run,
            tmp_path / f"{run}-figures",
            only=prefix,
            parameters=parameters,
            strict=False,
        )
        assert len(report.runs) == 1 and not report.runs[0].error, report.runs
        executed.append(
            nbformat.read(tmp_path / run / f"{report.runs[0].name}.ipynb", as_version=4)
        )
    first, second = ([c for c in nb.cells if c.cell_type == "code"] for nb in executed)
    ignored = [
        i for i, c in enumerate(first) if "nbval-ignore-output" in c.metadata.get("tags", [])
    ]
    assert ignored, "the notebook chosen has no cells that nbval skips: choose a training notebook"
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        assert _outputs(a) == _outputs(b), (
            f"code cell {index} differs between two runs on one machine"
        )
