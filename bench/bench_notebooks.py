"""Wall time of every notebook of the course, as `make reproduce` runs them, from a fresh clone.

Clones the repository's HEAD into a temporary folder (committed files only, nothing from this
working tree), runs ``qatcore reproduce --json`` there with this interpreter (its kernels run in this
environment, as `make reproduce`'s do in `.venv`), and writes each notebook's wall time with the
machine it ran on: CPU model, cores, threads, the load average before and after, so a slow row
can be told from a busy machine, and the time of a reference training step before the run, so it can
be told from a slower one (the same CPU model can run the course's steps at very different speeds from
one day to the next). Writes ``bench/results/notebooks.md`` and ``notebooks.json``; the
README's times quote it.

    .venv/bin/python bench/bench_notebooks.py            # the whole course, a few minutes
    .venv/bin/python bench/bench_notebooks.py --only 03  # one notebook, printed only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from qatcore.runtime import thread_count

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: our bar for the default run of one notebook on two cores (issue 32)
BUDGET_S = 60
#: ... and for all of them, as `make reproduce` runs them (issue 32)
TOTAL_BUDGET_S = 240


def machine() -> dict:
    """What the times were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "threads": thread_count(),
    }


def reference_step_ms(rounds: int = 5, steps: int = 20) -> float:
    """Median milliseconds of ``bench_training.py``'s DSQ step on its digits setting (the 2-bit MNIST CNN on 8×8
    images, batch 64: the network the course trains most), at the notebooks' thread count: a yardstick of this
    machine's speed that does not depend on the notebooks, and the same step as that table's digits DSQ column."""
    import torch
    from bench_training import SETTINGS, Trainer, build_models

    torch.set_num_threads(thread_count())
    torch.manual_seed(0)
    digits = next(s for s in SETTINGS if s.image_size == 8)
    x = torch.rand(digits.batch, 1, digits.image_size, digits.image_size)
    trainer = Trainer(build_models(digits)["dsq"], x, torch.randint(0, 10, (digits.batch,)))
    trainer.run(5)
    return round(1e3 * statistics.median(trainer.run(steps) for _ in range(rounds)), 2)


def run(only: str) -> dict:
    """Clone HEAD and reproduce its notebooks; each notebook's seconds and error, plus the machine."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    reference = reference_step_ms()
    with tempfile.TemporaryDirectory(prefix="qatcore-clone-") as folder:
        clone = Path(folder) / "qatcore"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        load_before = os.getloadavg()
        command = [sys.executable, "-m", "qatcore", "reproduce", "--json"]
        if only:
            command += ["--only", only]
        done = subprocess.run(command, cwd=clone, capture_output=True, text=True)
        load_after = os.getloadavg()
    if not done.stdout.strip():
        raise SystemExit(
            f"reproduce printed nothing (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    report = json.loads(done.stdout)
    return {
        "commit": commit,
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "reference_step_ms": reference,
        "ok": report["ok"],
        "notebooks": {
            r["name"]: {"seconds": round(r["seconds"], 1), "error": r["error"]}
            for r in report["runs"]
        },
    }


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Notebook wall times",
        "",
        f"`bench/bench_notebooks.py` on a fresh clone of commit {result['commit']}: "
        f"`qatcore reproduce`, default settings. Machine: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, torch threads {m['threads']}. Load average (1, 5, 15 min) "
        f"{result['load_average_before']} before and {result['load_average_after']} after. "
        + (
            "A reference training step (`bench_training.py`'s DSQ step on 8×8 digits, batch 64; see training.md) took "
            f"{result['reference_step_ms']:.1f} ms here before the run (a yardstick of the machine's speed, to "
            "compare runs by). "
            if "reference_step_ms" in result
            else ""
        )
        + f"Our bar: {BUDGET_S} s per notebook.",
        "",
        "| notebook | seconds | within our bar |",
        "|---|---:|---|",
    ]
    for name, row in result["notebooks"].items():
        verdict = (
            "ERROR: " + row["error"]
            if row["error"]
            else ("yes" if row["seconds"] <= BUDGET_S else "no")
        )
        lines.append(f"| {name} | {row['seconds']:.0f} | {verdict} |")
    total = sum(row["seconds"] for row in result["notebooks"].values())
    all_within = total <= TOTAL_BUDGET_S
    within = all_within and all(
        not row["error"] and row["seconds"] <= BUDGET_S for row in result["notebooks"].values()
    )
    lines += [
        "",
        f"All notebooks: {total:.0f} s (our bar: {TOTAL_BUDGET_S} s; "
        f"{'within' if all_within else 'over'}); every check passed: "
        f"{'yes' if result['ok'] else 'no'}.",
        "",
        f"Criterion: every notebook within {BUDGET_S} s, all within {TOTAL_BUDGET_S} s, every check passed: "
        + ("PASS" if within and result["ok"] else "MISS"),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default="",
        help="only the notebooks whose name starts with this; printed, not written",
    )
    args = parser.parse_args(argv)
    result = run(args.only)
    text = to_markdown(result)
    print(text)
    if not args.only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "notebooks.md").write_text(text, encoding="utf-8")
        (RESULTS / "notebooks.json").write_text(
            json.dumps(result, indent=2) + "\n", encoding="utf-8"
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
