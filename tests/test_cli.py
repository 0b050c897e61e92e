"""The command line's conventions: a light --help (its time is in bench/bench_cli.py), the version
written once, help on every argument, shared option names, and exit codes 0 / 1 / 2."""

import subprocess
import sys
from importlib.metadata import version

import pytest

from qatcore import cli


def test_top_level_help_imports_neither_torch_nor_sympy():
    probe = (
        "import sys; from qatcore import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'sympy' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    torch_loaded, sympy_loaded = run.stdout.strip().splitlines()[-1].split()
    assert torch_loaded == "False" and sympy_loaded == "False", run.stdout
    assert "reproduce" in run.stdout and "bnn-train" in run.stdout


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"qatcore {version('qatcore')}"


@pytest.mark.parametrize("command", list(cli.SUBCOMMANDS))
def test_every_argument_of_every_subcommand_has_help(command):
    parser = cli.build_parser(command)
    sub = next(
        a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0]))
    )
    for action in sub.choices[command]._actions:
        assert action.help, (
            f"qatcore {command} {action.option_strings or action.dest} has no help text"
        )


def test_shared_options_have_one_spelling():
    spellings = {}
    for command in cli.SUBCOMMANDS:
        parser = cli.build_parser(command)
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            spellings.setdefault(action.dest, set()).update(action.option_strings)
    assert (
        "batch" not in spellings and "w_bits" not in spellings
    )  # --batch-size and --bits everywhere
    for dest in ("json", "seed", "data_dir", "nproc", "batch_size", "bits"):
        assert len(spellings[dest]) == 1, spellings[dest]


def test_exit_codes_usage_two_bad_value_two():
    with pytest.raises(SystemExit) as usage:
        cli.main(["ace", "--no-such-flag"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as bad_value:
        cli.main(["ace", "--model", "no_such_model"])
    assert bad_value.value.code == 2


def test_a_failed_check_exits_one(monkeypatch):
    from qatcore.course.report import CheckFailed

    def fails(args):
        raise CheckFailed("✘ FAILED: a claim")

    monkeypatch.setitem(
        cli.SUBCOMMANDS, "ace", (*cli.SUBCOMMANDS["ace"][:2], fails, cli.SUBCOMMANDS["ace"][3])
    )
    assert cli.main(["ace", "--model", "mnist_cnn"]) == 1
