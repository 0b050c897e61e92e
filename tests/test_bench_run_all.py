"""bench/run_all.py's --only: one benchmark rerun, its row of the summary replaced, every other line kept; and
the summary's section on the committed GPU tables."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"
SUMMARY = """# Benchmark results

| benchmark | table | wall time (s) | status | criteria |
|---|---|---:|---|---|
| `bench_a.py` | [a.md](a.md) | 12 | ok | Criterion: PASS |
| `bench_b.py` | [b.md](b.md) | 184 | FAILED | Criterion: MISS (0.73 s > 0.5 s) |

## The whole course

| `make reproduce` wall time (7 notebooks) | 200 s |
"""


def run_all():
    spec = importlib.util.spec_from_file_location("run_all", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_the_rerun_benchmark_row_changes():
    new = {
        "name": "bench_b.py",
        "table": "b.md",
        "seconds": 177,
        "ok": True,
        "verdicts": ["x: PASS", "y"],
    }
    text = run_all().refreshed(SUMMARY, [new])
    old_lines, new_lines = SUMMARY.splitlines(), text.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert changed == [(old_lines[5], "| `bench_b.py` | [b.md](b.md) | 177 | ok | x: PASS<br>y |")]


def test_a_benchmark_without_a_row_is_refused():
    new = {"name": "bench_c.py", "table": "", "seconds": 1, "ok": True, "verdicts": []}
    with pytest.raises(ValueError, match="bench_c.py has no row"):
        run_all().refreshed(SUMMARY, [new])


def test_the_summary_names_the_committed_gpu_tables(tmp_path):
    module = run_all()
    assert module.gpu_tables(tmp_path) == []
    (tmp_path / "a.md").write_text("# A CPU table\n\nCriterion: PASS\n")
    (tmp_path / "b_cuda.md").write_text(
        "# Memory on a GPU\n\n| x | 1 |\n\n- Criterion: within 5×: **FAIL**\n"
    )
    (tmp_path / "c_cuda.md").write_text("no title, no criterion\n")
    rows = [line for line in module.gpu_tables(tmp_path) if line.startswith("| [")]
    assert rows == [
        "| [b_cuda.md](b_cuda.md) | Memory on a GPU | Criterion: within 5×: FAIL |",
        "| [c_cuda.md](c_cuda.md) | c_cuda | — |",
    ]
    # the committed summary has the section a run would write now
    committed = (module.RESULTS / "README.md").read_text()
    assert module.with_gpu_tables(committed) == committed, "run bench/run_all.py --gpu-tables"


def test_the_gpu_section_is_rewritten_and_the_rest_kept(tmp_path):
    module = run_all()
    (tmp_path / "new_cuda.md").write_text("# A new GPU table\n")
    stale = SUMMARY + "\n## Measured on a GPU\n\n| [old_cuda.md](old_cuda.md) | gone | — |\n"
    for text in (SUMMARY, stale):
        rewritten = module.with_gpu_tables(text, tmp_path)
        assert rewritten.startswith(SUMMARY.rstrip("\n") + "\n\n## Measured on a GPU\n")
        assert (
            "old_cuda" not in rewritten
            and "| [new_cuda.md](new_cuda.md) | A new GPU table | — |" in rewritten
        )
        assert module.with_gpu_tables(rewritten, tmp_path) == rewritten
