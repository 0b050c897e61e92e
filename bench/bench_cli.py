"""Time of ``qatcore --help`` in a fresh interpreter: the command line must answer at once.

Each round starts a new Python process that imports ``qatcore.cli``, prints the top-level help and
reports its own time from before the import to after the help, and whether torch or sympy got
imported on the way (neither may be: a subcommand's arguments are built only when it is chosen).
Reported: the median (min–max) over rounds of that in-process time, and the wall time of the whole
process (interpreter start-up included) for reference.

Acceptance criterion: the median in-process time is under 1 s and neither torch nor sympy is
imported; the script exits 1 otherwise. Run from the repository root:

    .venv/bin/python bench/bench_cli.py            # a few seconds; writes bench/results/cli.md
    .venv/bin/python bench/bench_cli.py --quick    # 3 rounds, prints only
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tables import arguments, publish

LIMIT = 1.0
RESULTS = Path(__file__).resolve().parent / "results" / "cli.md"
PROBE = (
    "import sys, time; t = time.perf_counter(); from qatcore import cli\n"
    "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
    "print(time.perf_counter() - t, 'torch' in sys.modules, 'sympy' in sys.modules)"
)


def one_help() -> tuple[float, float, bool]:
    """(seconds inside the process, wall seconds of the process, torch or sympy imported)."""
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    wall = time.perf_counter() - start
    seconds, torch_loaded, sympy_loaded = run.stdout.strip().splitlines()[-1].split()
    return float(seconds), wall, "True" in (torch_loaded, sympy_loaded)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, RESULTS, argv)
    one_help()  # warm-up: the first start reads the files from disk
    repeats = 3 if args.quick else args.repeats
    runs = [one_help() for _ in range(repeats)]
    inside = [r[0] for r in runs]
    wall = [r[1] for r in runs]
    heavy = any(r[2] for r in runs)
    ok = statistics.median(inside) < LIMIT and not heavy
    lines = [
        "# `qatcore --help` in a fresh interpreter",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {repeats} rounds (median, min–max).",
        "",
        "| measure | time (s) |",
        "|---|---:|",
        f"| import qatcore.cli + --help | {statistics.median(inside):.3f} "
        f"({min(inside):.3f}–{max(inside):.3f}) |",
        f"| whole process (interpreter start-up included) | {statistics.median(wall):.3f} "
        f"({min(wall):.3f}–{max(wall):.3f}) |",
        "",
        f"torch or sympy imported by --help: {'yes' if heavy else 'no'}",
        "",
        f"Criterion: --help under {LIMIT:g} s, importing neither torch nor sympy: "
        f"**{'PASS' if ok else 'FAIL'}**",
    ]
    publish(lines, args.output, args.quick)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
