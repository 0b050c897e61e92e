"""Run every benchmark script and the whole course; rewrite ``bench/results/README.md``.

Each ``bench/bench_*.py`` runs in its own process with its default arguments (those that measure a GPU,
``bench_*_cuda.py``, only where a CUDA device is) and writes its own
table to ``bench/results/<name>.md``; this script times it, keeps its exit status, and copies the
lines of its table that state a criterion (PASS / FAIL) into one summary. Then it times
``qatcore reproduce`` (every notebook, executed into ``build/``) and names the slowest notebook.
Run from the repository root on a quiet machine (other load skews every timing):

    .venv/bin/python bench/run_all.py                 # everything, about 45 minutes on 2 cores
    .venv/bin/python bench/run_all.py --skip-reproduce
    .venv/bin/python bench/run_all.py --inplace        # the notebooks' stored outputs too
    .venv/bin/python bench/run_all.py --only bench_widgets.py   # rerun one, refresh its row
    .venv/bin/python bench/run_all.py --gpu-tables     # only relink the committed GPU tables (*_cuda.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: the words a table states a criterion's outcome with
VERDICT = re.compile(r"\b(PASS|FAIL|MISS)\b")


def needs_a_gpu(script: Path) -> bool:
    """Whether ``script`` measures a GPU only (``bench_*_cuda.py``): it runs where a CUDA device is."""
    return script.stem.endswith("_cuda")


def verdicts_of(lines: list[str]) -> list[str]:
    """The lines of a table that state a criterion's outcome (a sentence rather than a table row, where both)."""
    matching = [line.replace("**", "").strip("- ") for line in lines if VERDICT.search(line)]
    sentences = [line for line in matching if not line.startswith("|")]  # prefer a stated criterion
    return sentences or [line.strip("| ").replace("|", "/") for line in matching]


def run_benchmark(script: Path) -> dict:
    """Run one benchmark script; its wall time, exit status and the verdict lines of its table."""
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    table = RESULTS / f"{script.stem.removeprefix('bench_')}.md"
    verdicts = verdicts_of(table.read_text().splitlines() if table.exists() else [])
    if run.returncode:
        verdicts.append(
            f"exit status {run.returncode}: {(run.stderr or run.stdout).strip().splitlines()[-1:]}"
        )
    return {
        "name": script.name,
        "table": table.name if table.exists() else "",
        "seconds": seconds,
        "ok": run.returncode == 0,
        "verdicts": verdicts,
    }


def run_reproduce(inplace: bool = False) -> dict:
    """Time ``qatcore reproduce`` over every notebook; the slowest notebook and the check count."""
    from qatcore.course.reproduce import reproduce

    started = time.monotonic()
    report = reproduce(
        ROOT / "notebooks", ROOT / "build" / "notebooks", ROOT / "figures", inplace=inplace
    )
    slowest = max(report.runs, key=lambda r: r.seconds)
    checks = [e for e in report.entries if e["kind"] == "check"]
    return {
        "seconds": time.monotonic() - started,
        "ok": report.ok,
        "slowest": slowest.name,
        "slowest_seconds": slowest.seconds,
        "checks": len(checks),
        "failed": len(report.failed_checks),
        "notebooks": len(report.runs),
    }


def row(b: dict) -> str:
    """A benchmark's line of the summary table."""
    link = f"[{b['table']}]({b['table']})" if b["table"] else "—"
    return (
        f"| `{b['name']}` | {link} | {b['seconds']:.0f} | {'ok' if b['ok'] else 'FAILED'} | "
        f"{'<br>'.join(b['verdicts']) or '—'} |"
    )


def refreshed(text: str, benchmarks: list[dict]) -> str:
    """The summary ``text`` with the rows of ``benchmarks`` replaced by their new ones, every other line
    kept (``--only``); ValueError for a benchmark the summary has no row of."""
    for b in benchmarks:
        old = re.compile(rf"^\| `{re.escape(b['name'])}` \|.*$", re.MULTILINE)
        if not old.search(text):
            raise ValueError(f"{b['name']} has no row in the summary yet: run every benchmark once")
        text = old.sub(lambda _, b=b: row(b), text)
    return text


def gpu_tables(results: Path = RESULTS) -> list[str]:
    """The summary's section on the committed GPU tables (``*_cuda.md``, measured on a lent GPU, most of them by
    ``bench/gpu_session.sh``): each linked with its title and the outcomes it states. A run without a GPU does not
    remake them, so the summary names them rather than leaving them out."""
    tables = sorted(results.glob("*_cuda.md"))
    if not tables:
        return []
    lines = [
        "",
        "## Measured on a GPU",
        "",
        "Tables measured on a lent GPU and committed; a run without a GPU keeps them as they are.",
        "",
        "| table | what | criteria |",
        "|---|---|---|",
    ]
    for table in tables:
        text = table.read_text().splitlines()
        title = next((line[2:] for line in text if line.startswith("# ")), table.stem)
        lines.append(
            f"| [{table.name}]({table.name}) | {title} | {'<br>'.join(verdicts_of(text)) or '—'} |"
        )
    return lines


def with_gpu_tables(text: str, results: Path = RESULTS) -> str:
    """``text``, a summary, with its section on the GPU tables rewritten from the tables committed now."""
    kept = text.split("\n## Measured on a GPU\n")[0].rstrip("\n")
    return "\n".join([kept, *gpu_tables(results)]) + "\n"


def summary(benchmarks: list[dict], course: dict | None) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run_all.py`: torch {torch.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs. Each row links the script's own table.",
        "",
        "| benchmark | table | wall time (s) | status | criteria |",
        "|---|---|---:|---|---|",
    ]
    lines += [row(b) for b in benchmarks]
    if course:
        lines += [
            "",
            "## The whole course",
            "",
            "| what | value |",
            "|---|---:|",
            f"| `make reproduce` wall time ({course['notebooks']} notebooks) | {course['seconds']:.0f} s |",
            f"| slowest notebook | {course['slowest']} ({course['slowest_seconds']:.0f} s) |",
            f"| checks passed | {course['checks'] - course['failed']} of {course['checks']} |",
        ]
    lines += gpu_tables()
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-reproduce", action="store_true", help="benchmarks only")
    parser.add_argument(
        "--inplace", action="store_true", help="let reproduce rewrite the committed notebooks"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SCRIPT",
        help="rerun only these benchmarks (e.g. bench_widgets.py) and refresh their rows, keeping the rest",
    )
    parser.add_argument(
        "--gpu-tables",
        action="store_true",
        help="run nothing: rewrite the summary's section on the committed GPU tables (*_cuda.md)",
    )
    args = parser.parse_args()
    if args.gpu_tables:
        (RESULTS / "README.md").write_text(with_gpu_tables((RESULTS / "README.md").read_text()))
        return 0
    if args.only:
        unknown = [name for name in args.only if not (ROOT / "bench" / name).is_file()]
        if unknown:
            parser.error(f"no such benchmark in bench/: {', '.join(unknown)}")
        benchmarks = [run_benchmark(ROOT / "bench" / name) for name in args.only]
        text = with_gpu_tables(refreshed((RESULTS / "README.md").read_text(), benchmarks))
        (RESULTS / "README.md").write_text(text)
        print(text)
        return 0 if all(b["ok"] for b in benchmarks) else 1
    benchmarks = []
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        if needs_a_gpu(script) and not torch.cuda.is_available():
            print(f"leaving out {script.name}: no CUDA device here", flush=True)
            continue
        print(f"running {script.name} …", flush=True)
        benchmarks.append(run_benchmark(script))
    course = None if args.skip_reproduce else run_reproduce(args.inplace)
    text = summary(benchmarks, course)
    (RESULTS / "README.md").write_text(text)
    print(text)
    return 0 if all(b["ok"] for b in benchmarks) and (course is None or course["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
