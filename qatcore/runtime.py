"""Reproducibility: one call that fixes seeds, torch's thread count and deterministic kernels.

Notebooks call ``configure()`` in their first cell. The thread count comes from the
``QATCORE_THREADS`` environment variable (default 1), so a test can rerun every notebook with another
thread count and check that the stored outputs still match. One thread, because the course's models
are small: a second intra-op thread buys little on them, and on a busy machine its OpenMP workers
spin-wait for a core; one click of notebook 02's dashboard took 131 s with two threads and 10 s with
one, on two cores shared with other work.
``show_progress`` is where every trainer asks whether to draw its progress bar.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from qatcore.checks import int_at_least

DEFAULT_THREADS = 1
THREADS_VARIABLE = "QATCORE_THREADS"
PROGRESS_VARIABLE = "QATCORE_PROGRESS"
STRICT_VARIABLE = "QATCORE_STRICT"
_strict: bool | None = None  # None: read $QATCORE_STRICT


def thread_count() -> int:
    """Threads for torch: ``$QATCORE_THREADS`` if set, else 1."""
    raw = os.environ.get(THREADS_VARIABLE, str(DEFAULT_THREADS))
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be an int >= 1, got {raw!r}")
    return threads


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    int_at_least("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def strict_checks() -> bool:
    """Whether a failed claim check raises (the default) or only warns: ``configure(strict=...)``
    when called, else ``$QATCORE_STRICT`` (``0`` warns)."""
    if _strict is not None:
        return _strict
    return os.environ.get(STRICT_VARIABLE, "1").strip().lower() not in ("0", "false", "no")


def configure(seed: int = 0, threads: int | None = None, strict: bool | None = None) -> None:
    """Fix seeds, thread count (``threads`` or ``thread_count()``) and deterministic algorithms.

    ``strict=False`` turns a failing claim check into a visible warning, for a student who moves a
    parameter away from the notebook's defaults and wants to read on; None keeps the current mode.
    """
    global _strict
    if strict is not None:
        _strict = bool(strict)
    threads = thread_count() if threads is None else threads
    int_at_least("threads", threads, 1)
    torch.set_num_threads(threads)
    # CPU kernels are all deterministic; on a GPU, an op without a deterministic kernel warns
    torch.use_deterministic_algorithms(True, warn_only=True)
    _full_float32_on_gpus()
    seed_everything(seed)


def _full_float32_on_gpus() -> None:
    """Keep float32 convolutions and matrix products on a GPU in float32.

    cuDNN's default on Ampere and later GPUs computes float32 convolutions in TF32 (10 mantissa bits),
    which moves trained numbers by far more than a change of kernels does: two runs meant to agree
    within float tolerance would not. The CPU is unaffected. These are the flags every torch version
    reads; torch 2.9's per-operator ``fp32_precision`` would leave cuDNN's convolutions and RNNs set
    differently, and torch code that reads ``allow_tf32`` (``torch.export`` does) then raises."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def show_progress(progress: bool | None = None) -> bool:
    """Whether a trainer draws its progress bar: ``progress`` when given, else yes unless
    ``$QATCORE_PROGRESS`` is ``0`` or the call runs under pytest (bars carry random ids and timings)."""
    if progress is not None:
        return progress
    return os.environ.get(PROGRESS_VARIABLE, "1") != "0" and "PYTEST_CURRENT_TEST" not in os.environ
