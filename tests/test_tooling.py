"""The tools that keep the code honest are configured as CONTRIBUTING says: ruff with RUF100 and a
complexity limit, ruff format and mypy in `make lint` (which `make test` runs), mypy in the test extra
and pinned, pre-commit hooks pinned by version, and mypy skips no module."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_ruff_flags_unused_noqa_and_complex_functions():
    lint = PYPROJECT["tool"]["ruff"]["lint"]
    assert {"RUF100", "C90"} <= set(lint["select"])
    assert lint["mccabe"]["max-complexity"] <= 10


def test_make_lint_runs_ruff_format_and_mypy_and_make_test_runs_lint():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check" in lint and "ruff format --check" in lint and "mypy qatcore" in lint
    for target in ("test", "test-all"):
        recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert "$(MAKE) --no-print-directory lint" in recipe, target


def test_mypy_is_in_the_test_extra_the_conda_file_and_pinned():
    assert any(r.startswith("mypy") for r in PYPROJECT["project"]["optional-dependencies"]["test"])
    assert "mypy" in (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert re.search(r"^mypy==\d", (ROOT / "constraints.txt").read_text(), re.M)


def test_mypy_checks_every_module_and_lets_no_error_pass_unseen():
    """No module is skipped (no ``ignore_errors`` override, no ``ignore_errors`` anywhere in the config),
    and an ignore that is no longer needed is itself an error."""
    mypy = PYPROJECT["tool"]["mypy"]
    assert not mypy.get("ignore_errors")
    assert not [o for o in mypy.get("overrides", []) if o.get("ignore_errors")]
    assert mypy["files"] == ["qatcore"] and mypy["warn_unused_ignores"]


def test_pre_commit_hooks_are_pinned_and_need_no_local_venv():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    for repo in config["repos"]:
        if repo["repo"] != "local":
            assert re.fullmatch(r"v\d+(\.\d+)+", repo["rev"]), repo
        for hook in repo["hooks"]:
            assert ".venv" not in hook.get("entry", ""), hook["id"]
            if hook.get("language") == "python":
                assert all("==" in d for d in hook.get("additional_dependencies", [])), hook["id"]
    ruff = next(r for r in config["repos"] if "ruff" in r["repo"])
    pinned = re.search(r"^ruff==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert ruff["rev"] == f"v{pinned}", "pre-commit's ruff is the tested one"
