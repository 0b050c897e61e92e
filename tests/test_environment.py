"""The set-up a newcomer relies on: pyproject and environment.yml agree; the commands exist."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _normalise(requirement: str) -> str:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement).groups()
    parts = sorted(p.strip() for p in spec.split(",") if p.strip())
    return re.sub(r"[-_.]+", "-", name).lower() + ",".join(parts)


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    wanted = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [r for r in pip_section if not r.startswith("-e")]
    assert "-e ." in pip_section, "environment.yml must install qatcore itself"
    assert sorted(map(_normalise, listed)) == sorted(map(_normalise, wanted))
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11" and project["requires-python"].startswith(">=3.11")


def test_the_tested_set_pins_torch_to_the_cpu_build_and_make_installs_with_it():
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in constraints
    assert any(r.startswith("torch>=") for r in _pyproject()["project"]["dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c constraints.txt") >= 2  # the base install and the extras
    pinned = {line.split("==")[0].lower() for line in constraints if "==" in line}
    for requirement in _pyproject()["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()
        assert name in pinned, f"{name} is not pinned in constraints.txt"


def test_readme_ci_and_makefile_agree_on_the_commands():
    readme = (ROOT / "README.md").read_text()
    for command in ("make reproduce", "make test", "make test-all", "make lab"):
        assert command in readme
    makefile = (ROOT / "Makefile").read_text()
    for target in ("reproduce:", "test:", "test-all:", "lab:"):
        assert re.search(rf"^{target}", makefile, re.M)
    ci = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.startswith("#")
    ]
    assert ci[-1].strip() == "make test-all", "CI must run the full tier, README's command for CI"


def test_normalise_sees_a_drift():
    assert _normalise("numpy>=2.0,<3") == _normalise("NumPy <3, >=2.0")
    assert _normalise("numpy>=2.0,<3") != _normalise("numpy>=2.1,<3")
