"""Stored notebook outputs must not depend on the thread count of the machine that reruns them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_notebooks_pass_strict_nbval_with_one_thread():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(QATCORE_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "notebooks", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
