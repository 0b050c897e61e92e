"""The committed notebooks pass strict nbval on a CPU other than the one that executed them.

Trained numbers change in their low digits with the CPU's kernels (AVX-512, AVX2, baseline) and
the thread count. Cells that print them carry the ``nbval-ignore-output`` tag and guard their
claims with ``check()``; everything else must match exactly. This reruns the whole strict pass
with torch's baseline kernels, oneDNN held to SSE4.1 and one thread: another CPU, emulated here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: settings under which this machine computes as a different CPU would
OTHER_CPUS = {
    "baseline kernels, SSE4.1, one thread": {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "QATCORE_THREADS": "1",
    },
}


def strict_nbval(settings: dict[str, str], workers: int = 2) -> subprocess.CompletedProcess:
    """Strict nbval over notebooks/ in a fresh pytest under ``settings``, notebooks spread over
    ``workers`` processes of one thread each (one notebook stays in one kernel)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "QATCORE_"))}
    env.update(settings, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "pytest", "notebooks", "-q", "-p", "no:randomly", "-m", "",
               "-n", str(workers), "--dist", "loadfile"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OTHER_CPUS))
def test_notebooks_pass_strict_nbval_on_an_emulated_other_cpu(name):
    run = strict_nbval(OTHER_CPUS[name])
    assert run.returncode == 0, f"{name}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "failed" not in run.stdout
