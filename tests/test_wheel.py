"""A lean library: installed from its wheel (no repository, no course extra), the library's commands
work and every course command that needs the repository says so in one line, with exit status 2."""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from qatcore.course.repository import in_repository, require_repository

ROOT = Path(__file__).resolve().parent.parent
#: the course's commands that read the repository's notebooks, docs and committed results
COURSE_COMMANDS = (
    ["-m", "qatcore", "reproduce"],
    ["-m", "qatcore.course.student"],
    ["-m", "qatcore.course.site"],
)


def test_this_checkout_is_the_repository():
    assert in_repository(ROOT) and not in_repository(ROOT / "qatcore")


def test_outside_the_repository_a_course_command_says_so_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        require_repository("qatcore reproduce", root=tmp_path)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qatcore reproduce: needs a clone")
    require_repository("qatcore reproduce", notebooks=tmp_path, root=tmp_path)  # a folder at hand


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
