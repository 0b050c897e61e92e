"""bench/bench_notebooks.py's table: the bars it judges by, and the machine's yardstick beside the times."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_notebooks.py"


def bench():
    if (
        str(SCRIPT.parent) not in sys.path
    ):  # the script imports bench_training beside it, as when run
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_notebooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(seconds: dict, **extra) -> dict:
    return {
        "commit": "abc1234",
        "machine": {"cpu": "a CPU", "cores": 2, "python": "3.11", "threads": 1},
        "load_average_before": [1.0, 1.0, 1.0],
        "load_average_after": [1.0, 1.0, 1.0],
        "ok": True,
        "notebooks": {name: {"seconds": s, "error": ""} for name, s in seconds.items()},
        **extra,
    }


def test_the_table_judges_each_notebook_and_the_total_and_states_the_yardstick():
    module = bench()
    fast = module.to_markdown(result({"00_a": 10.0, "01_b": 59.0}, reference_step_ms=9.44))
    assert "took 9.4 ms here before the run" in fast
    assert fast.rstrip().endswith("PASS")
    slow = module.to_markdown(result({"00_a": 10.0, "01_b": 61.0}))
    assert "| 01_b | 61 | no |" in slow and slow.rstrip().endswith("MISS")
    assert "reference training step" not in slow  # a table from before the yardstick existed
    # each notebook within its bar, 250 s in all
    over = module.to_markdown(result({f"0{i}_n": 50.0 for i in range(5)}))
    assert "250 s (our bar: 240 s; over)" in over and over.rstrip().endswith("MISS")


def test_the_yardstick_is_a_real_training_step():
    ms = bench().reference_step_ms(rounds=1, steps=2)
    assert 0.1 < ms < 10_000
