"""``qatcore reproduce`` always ends: a kernel that dies, a cell past its timeout and a second run in
the same build folder each give one plain line (notebook, cell, exception) and an exit code."""

import subprocess
import sys
import time

import nbformat

from qatcore import files
from qatcore.cli import main
from qatcore.course.reproduce import cell_error, plain_text


def _notebook(folder, name, *sources):
    folder.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, folder / name)


def test_a_dead_kernel_and_a_cell_past_its_timeout_end_the_run_with_named_cells(tmp_path):
    notebooks = tmp_path / "nb"
    _notebook(notebooks, "01_dies.ipynb", "x = 1", "import os\nos._exit(1)")
    _notebook(notebooks, "02_sleeps.ipynb", "import time\ntime.sleep(10**6)")
    _notebook(notebooks, "03_raises.ipynb", "x = 1", "y = 2", "raise KeyError('boom')")
    _notebook(notebooks, "04_fine.ipynb", "print(1)")
    build = tmp_path / "build"
    previous = build / "01_dies.ipynb"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qatcore",
            "reproduce",
            "--notebooks",
            str(notebooks),
            "--build",
            str(build),
            "--figures",
            str(tmp_path / "fig"),
            "--results",
            "",
            "--timeout",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    dies = next(line for line in lines if line.startswith("01_dies "))
    assert "cell 1: DeadKernelError" in dies
    sleeps = next(line for line in lines if line.startswith("02_sleeps "))
    assert "cell 0: CellTimeoutError" in sleeps and "3 s" in sleeps
    raises = next(line for line in lines if line.startswith("03_raises "))
    assert "cell 2: KeyError: 'boom'" in raises
    assert next(line for line in lines if line.startswith("04_fine ")).endswith("ok")
    assert "\x1b[" not in done.stdout + done.stderr  # no terminal escape codes in a pipe
    assert "Traceback" not in done.stdout + done.stderr
    assert previous.exists() and (build / "04_fine.ipynb").exists()
    # four kernel start-ups, the 3 s timeout and the CLI's imports, with a wide margin for load
    assert elapsed < 150


def test_a_second_run_in_the_same_build_folder_refuses_with_one_line(tmp_path, capsys):
    notebooks = tmp_path / "nb"
    _notebook(notebooks, "01.ipynb", "print(1)")
    build = tmp_path / "build"
    build.mkdir()
    (build / "report.jsonl").write_text('{"kept": true}\n')
    with files.exclusive_lock(build / ".reproduce.lock", "qatcore reproduce"):
        code = None
        try:
            main(
                [
                    "reproduce",
                    "--notebooks",
                    str(notebooks),
                    "--build",
                    str(build),
                    "--figures",
                    str(tmp_path / "fig"),
                    "--results",
                    "",
                ]
            )
        except SystemExit as exit:
            code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "in use by another qatcore reproduce (pid " in err
    assert (build / "report.jsonl").read_text() == '{"kept": true}\n'  # the other run's report


def test_the_lock_is_released_when_its_holder_ends(tmp_path):
    lock = tmp_path / ".lock"
    with files.exclusive_lock(lock, "run"):
        pass
    with files.exclusive_lock(lock, "run"):  # not stale after a normal exit
        pass
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, pathlib; from qatcore import files\n"
            f"with files.exclusive_lock(pathlib.Path({str(lock)!r}), 'run'): os._exit(9)",
        ],
        timeout=60,
    )
    assert killed.returncode == 9
    with files.exclusive_lock(lock, "run"):  # nor after the holder was killed
        pass


def test_reproduce_refuses_a_bad_timeout_and_an_unwritable_build(tmp_path, capsys):
    notebooks = tmp_path / "nb"
    _notebook(notebooks, "01.ipynb", "print(1)")
    (tmp_path / "file").write_text("")
    for extra, expected in [
        (["--timeout", "0"], "timeout must be an int >= 1"),
        (["--build", str(tmp_path / "file")], "build must be a folder"),
        (["--build", str(tmp_path / "file" / "sub")], "build folder"),
        (["--figures", str(tmp_path / "file")], "figures must be a folder"),
    ]:
        try:
            main(
                [
                    "reproduce",
                    "--notebooks",
                    str(notebooks),
                    "--results",
                    "",
                    "--build",
                    str(tmp_path / "b"),
                    "--figures",
                    str(tmp_path / "f"),
                    *extra,
                ]
            )
        except SystemExit as exit:
            assert exit.code == 2, extra
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (extra, err)


def test_cell_errors_are_one_plain_line():
    from nbclient.exceptions import CellExecutionError

    coloured = CellExecutionError(
        "tb", "\x1b[0;31mValueError\x1b[0m", "bad\nvalue \x1b[1mhere\x1b[0m"
    )
    assert cell_error(coloured, 5) == "ValueError: bad value here"
    assert plain_text("\x1b[38;5;241mx\x1b[39m") == "x"
