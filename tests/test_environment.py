"""The set-up a newcomer relies on: pyproject and environment.yml agree; the commands exist; CI runs
README's two commands as printed, before anything optional is installed; and the default install
holds every module the notebooks reach."""

import ast
import json
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
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


def readme_commands(readme: str) -> list[str]:
    """The commands of README's "Two commands" block, comments stripped, in order."""
    section = readme.split("## Two commands", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def ci_commands(script: str) -> list[str]:
    """The commands ``.ci/run`` runs at the top level (not inside its apt-get block), in order."""
    return [
        line.strip()
        for line in script.splitlines()
        if line.strip()
        and not line.startswith(("#", " ", "\t", "set ", "cd ", "missing", "[", "if", "fi"))
    ]


def test_readme_ci_and_makefile_agree_on_the_commands():
    readme = (ROOT / "README.md").read_text()
    for command in ("make reproduce", "make test", "make test-all", "make lab"):
        assert command in readme
    makefile = (ROOT / "Makefile").read_text()
    for target in ("reproduce:", "test:", "test-all:", "lab:"):
        assert re.search(rf"^{target}", makefile, re.M)
    assert readme_commands(readme) == ["make reproduce", "make test"]
    ci = ci_commands((ROOT / ".ci" / "run").read_text())
    assert ci == [*readme_commands(readme), "make test-all"], (
        "CI runs README's two commands verbatim, in README's order, before the full tier and "
        f"before any extra is installed; it runs {ci}"
    )


def test_the_readme_and_ci_readers_see_a_drift():
    readme = "## Two commands\n```bash\nmake reproduce   # run\nmake test\n```\n"
    assert readme_commands(readme) == ["make reproduce", "make test"]
    assert readme_commands(readme.replace("make test\n", "make check\n")) != [
        "make reproduce",
        "make test",
    ]
    script = "#!/bin/bash\nset -e\nif [ x ]; then\n  apt-get install -y x\nfi\nmake test-all\nmake reproduce\n"
    assert ci_commands(script) == ["make test-all", "make reproduce"]


def test_the_default_install_is_what_make_installs_for_the_two_commands():
    makefile = (ROOT / "Makefile").read_text()
    stamp_recipe = makefile.split("$(STAMP): pyproject.toml constraints.txt", 1)[1].split(
        "\n\n", 1
    )[0]
    assert "-e '.[course,test]'" in stamp_recipe
    for target in ("reproduce", "test"):
        assert re.search(rf"^{target}: \$\(STAMP\)$", makefile, re.M), (
            f"make {target} needs only the default install"
        )


# --- the default install holds every module the notebooks reach ------------------------------------

NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def _imports(tree: ast.AST) -> set[str]:
    """Modules ``tree`` imports anywhere (functions included), except imports guarded by
    ``except ImportError``: those are optional by construction."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


#: qatcore modules whose job needs an optional extra; no notebook may import them
EXTRA_ONLY = {"qatcore.course.site": "docs"}


def qatcore_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    found = {}
    for path in sorted((ROOT / "qatcore").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def notebook_imports() -> set[str]:
    """The modules the notebooks' code cells import (magics and shell lines left out)."""
    found = set()
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        found |= _imports(ast.parse("\n".join(lines)))
    return found


def modules_the_course_needs() -> tuple[set[str], set[str]]:
    """(qatcore modules, other top-level modules) the course needs: every qatcore module but the
    extras' own, and what they and the notebooks import, lazily imported modules included (a
    package's submodules loaded by name on first use are in the first set already)."""
    ours = {m for m in qatcore_modules() if not m.endswith("__main__")} - set(EXTRA_ONLY)
    imported = notebook_imports()
    for name in ours:
        imported |= _imports(ast.parse(qatcore_modules()[name].read_text()))
    others = {name.split(".")[0] for name in imported} - {"qatcore", "__future__"}
    return ours, others - set(sys.stdlib_module_names)


def test_the_course_needs_qonnx_and_the_widgets_but_no_notebook_needs_an_extra_only_module():
    ours, others = modules_the_course_needs()
    assert "qatcore.export.qonnx" in ours and {"qonnx", "torch", "sympy", "ipywidgets"} <= others
    assert "sphinx" not in others and "qatcore.course.site" not in ours
    reached = {m for m in notebook_imports() if m.startswith("qatcore")}
    assert not reached & set(EXTRA_ONLY)


@pytest.mark.slow
def test_a_fresh_venv_with_the_default_install_imports_every_module_the_notebooks_reach(tmp_path):
    """As ``make`` installs for ``make reproduce``/``make test``, into a new venv with nothing else."""
    ours, others = modules_the_course_needs()
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-c",
            "constraints.txt",
            "-e",
            ".[course,test]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(others | ours)!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {type(error).__name__}: {error}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    ran = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, (
        f"not importable on the default install:\n{ran.stdout}{ran.stderr[-2000:]}"
    )


def test_normalise_sees_a_drift():
    assert _normalise("numpy>=2.0,<3") == _normalise("NumPy <3, >=2.0")
    assert _normalise("numpy>=2.0,<3") != _normalise("numpy>=2.1,<3")


def test_a_checkout_on_the_path_without_being_installed_knows_its_version(tmp_path):
    # a copy of the checkout as one travels to a machine with its own Python: no build metadata beside it,
    # and -S leaves out site-packages, where this one's installed metadata lies
    (tmp_path / "qatcore").mkdir()
    for name in ("qatcore/__init__.py", "pyproject.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    code = "import qatcore; print(qatcore.__version__)"
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert done.stdout.strip() == pyproject["project"]["version"]
