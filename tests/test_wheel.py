"""A lean library: installed from its wheel (no repository, no course extra), the library's commands
work and every course command says in one line what it misses (the repository, or an extra's
modules), with exit status 2."""

import importlib.util
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from qatcore import cli
from qatcore.course import lint, repository, site, student
from qatcore.course.repository import in_repository, require_extra, require_repository

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = next((ROOT / "notebooks").glob("*.ipynb"))
#: the course's commands that read the repository's notebooks, docs and committed results
COURSE_COMMANDS = (
    ["-m", "qatcore", "reproduce"],
    ["-m", "qatcore.course.student"],
    ["-m", "qatcore.course.site"],
    ["-m", "qatcore.course.lint"],
)
#: the same given the notebooks they read, in a folder at hand: what they miss is the course extra
COURSE_EXTRA_COMMANDS = (
    ["-m", "qatcore", "reproduce", "--notebooks", "."],
    ["-m", "qatcore.course.student", "any.ipynb"],
    ["-m", "qatcore.course.lint", "any.ipynb"],
)


def _reproduce(notebooks: Path, tmp: Path) -> int:
    """``qatcore reproduce`` on ``notebooks`` with every output in ``tmp``: should the check under
    test not stop it, it runs on an empty or missing folder and writes nothing of the repository's."""
    outputs = {"--build": "build", "--figures": "figures", "--results": "results.md"}
    options = [arg for flag, name in outputs.items() for arg in (flag, str(tmp / name))]
    return cli.main(["reproduce", "--notebooks", str(notebooks), *options])


#: each course command's main, called in this process, on arguments that need the repository
NEEDS_THE_REPOSITORY = {
    "qatcore reproduce": lambda tmp: _reproduce(tmp / "none", tmp),
    "python -m qatcore.course.student": lambda tmp: student.main(["--out", str(tmp / "out")]),
    "python -m qatcore.course.site": lambda tmp: site.main(["--out", str(tmp / "out")]),
    "python -m qatcore.course.lint": lambda tmp: lint.main([]),
}
#: the same given the files they read (an empty folder at hand for reproduce), so what they miss is
#: nbformat
NEEDS_NBFORMAT = {
    "qatcore reproduce": lambda tmp: _reproduce(tmp, tmp),
    "python -m qatcore.course.student": lambda tmp: student.main(
        [str(NOTEBOOK), "--out", str(tmp)]
    ),
    "python -m qatcore.course.site": lambda tmp: site.main(["--out", str(tmp / "out")]),
    "python -m qatcore.course.lint": lambda tmp: lint.main([str(NOTEBOOK)]),
}


def test_this_checkout_is_the_repository():
    assert in_repository(ROOT) and not in_repository(ROOT / "qatcore")


def test_outside_the_repository_a_course_command_says_so_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        require_repository("qatcore reproduce", root=tmp_path)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qatcore reproduce: needs a clone")
    require_repository("qatcore reproduce", notebooks=tmp_path, root=tmp_path)  # a folder at hand


def test_without_an_extra_a_course_command_says_what_is_missing_in_one_line(capsys):
    require_extra("qatcore reproduce", "course", "json")  # installed: nothing to say
    with pytest.raises(SystemExit) as exit_:
        require_extra("qatcore reproduce", "course", "json", "qatcore_no_such_module")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "qatcore reproduce: needs qatcore_no_such_module,"
    )
    assert "pip install 'qatcore[course]'" in err


def _one_line_exit(run, tmp_path, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run(tmp_path)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", sorted(NEEDS_THE_REPOSITORY))
def test_each_course_command_without_the_repository_exits_2_in_one_line(
    command, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(repository, "in_repository", lambda root=None: False)  # a wheel's layout
    err = _one_line_exit(NEEDS_THE_REPOSITORY[command], tmp_path, capsys)
    assert err.startswith(f"{command}: needs a clone of the qatcore course repository")


@pytest.mark.parametrize("command", sorted(NEEDS_NBFORMAT))
def test_each_course_command_without_nbformat_exits_2_in_one_line(
    command, tmp_path, capsys, monkeypatch
):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "nbformat" else find_spec(name, *a),
    )
    err = _one_line_exit(NEEDS_NBFORMAT[command], tmp_path, capsys)
    assert err.startswith(f"{command}: needs nbformat") and "qatcore[course]" in err


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what is installed
    return subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_the_library_and_declines_the_course(tmp_path):
    """Build the wheel, install it with the tested constraints (the CPU torch) into a new venv, and
    run there, outside the repository: ace, train and export work; the course commands decline."""
    source, dist = tmp_path / "source", tmp_path / "dist"  # a copy: nothing stale, nothing left
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "qatcore", source / "qatcore", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = _run(
        Path(sys.executable),
        *("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."),
        cwd=source,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("qatcore-*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    pip = ("-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel))
    installed = _run(python, *pip, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    missing = _run(python, "-c", "import ipywidgets", cwd=tmp_path)
    assert missing.returncode != 0, "the course extra came with the library"
    where = _run(python, "-c", "import qatcore; print(qatcore.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(env)), where.stdout  # the wheel's copy, not the checkout's

    ace = _run(python, "-m", "qatcore", "ace", "--model", "resnet18", "--json", cwd=tmp_path)
    assert ace.returncode == 0 and '"acev2"' in ace.stdout, ace.stderr[-2000:]
    train = ("-m", "qatcore", "train", "--model", "bnn_mlp", "--epochs", "1", "--out", "c.pt")
    trained = _run(python, *train, cwd=tmp_path)
    assert trained.returncode == 0 and (tmp_path / "c.pt").is_file(), trained.stderr[-2000:]
    export = ("-m", "qatcore", "export", "c.pt", "--format", "onnx", "--out", "out")
    exported = _run(python, *export, cwd=tmp_path)
    assert exported.returncode == 0 and list((tmp_path / "out").glob("*.onnx")), exported.stderr[
        -2000:
    ]

    for command in COURSE_COMMANDS:
        ran = _run(python, *command, cwd=tmp_path)
        assert ran.returncode == 2, (command, ran.stderr[-2000:])
        assert "Traceback" not in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr
        assert "needs a clone of the qatcore course repository" in ran.stderr
    for command in COURSE_EXTRA_COMMANDS:
        ran = _run(python, *command, cwd=tmp_path)
        assert ran.returncode == 2, (command, ran.stderr[-2000:])
        assert "Traceback" not in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr
        assert "not installed (the course extra: pip install 'qatcore[course]')" in ran.stderr
