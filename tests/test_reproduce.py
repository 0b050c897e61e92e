"""qatcore reproduce on real notebooks run by a real kernel: the table, the figures, the exit code."""

import json
import subprocess
import sys

import nbformat
import pytest

from qatcore.course import report
from qatcore.course.reproduce import inject_parameters, reproduce

PASSING = """\
from matplotlib.figure import Figure
from qatcore.course.report import check, headline, save_figure
check("one plus one is two", 1 + 1 == 2)
headline("a measured number", 0.12345, threshold="≥ 0.1", paper="about 0.1", source="Paper, §1")
fig = Figure(); fig.subplots().plot([0, 1])
save_figure(fig, "tiny.png")
"""


def _notebook(folder, name, source):
    folder.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, folder / name)


def test_check_prints_records_and_raises(tmp_path, monkeypatch, capsys):
    log = tmp_path / "r.jsonl"
    monkeypatch.setenv(report.REPORT_VARIABLE, str(log))
    monkeypatch.setenv(report.NOTEBOOK_VARIABLE, "nb")
    report.check("holds", True, "detail")
    with pytest.raises(report.CheckFailed, match="FAILED: fails"):
        report.check("fails", False)
    report.headline("x", 1.23456, paper="a quote", source="Paper, Table 1", digits=2)
    with pytest.raises(ValueError, match="needs its source"):
        report.headline("x", 1.0, paper="a quote without a source")
    assert "✔ verified: holds (detail)" in capsys.readouterr().out
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["name"], e.get("passed"), e["notebook"]) for e in entries] == [
        ("holds", True, "nb"),
        ("fails", False, "nb"),
        ("x", None, "nb"),
    ]
    assert entries[2]["value"] == "1.23"


def test_save_figure_writes_only_when_asked(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.delenv(report.FIGURES_VARIABLE, raising=False)
    assert report.save_figure(Figure(), "a.png") is None
    monkeypatch.setenv(report.FIGURES_VARIABLE, str(tmp_path))
    assert report.save_figure(Figure(), "a.png") == tmp_path / "a.png"
    assert (tmp_path / "a.png").stat().st_size > 0


def test_reproduce_collects_checks_numbers_and_figures(tmp_path):
    _notebook(tmp_path / "nbs", "01_ok.ipynb", PASSING)
    result = reproduce(tmp_path / "nbs", tmp_path / "build", tmp_path / "figs")
    assert result.ok
    assert [e["name"] for e in result.entries] == ["one plus one is two", "a measured number"]
    assert (tmp_path / "figs" / "tiny.png").exists()
    executed = nbformat.read(tmp_path / "build" / "01_ok.ipynb", as_version=4)
    assert "✔ verified: one plus one is two" in executed.cells[0].outputs[0]["text"]
    untouched = nbformat.read(tmp_path / "nbs" / "01_ok.ipynb", as_version=4)
    assert untouched.cells[0].outputs == []
    table = result.to_markdown()
    assert (
        "| 01_ok | number | a measured number | 0.123 | ≥ 0.1 | about 0.1 (Paper, §1) | | |"
        in table
    )


def test_each_kind_of_source_has_its_own_column():
    from qatcore.course.reproduce import ReproduceReport, source_kind

    assert source_kind("Wang et al., ACM TECS 2023, abstract") == "paper"
    assert source_kind("the authors' repository README.md, table 'Results'") == "readme"
    assert source_kind("the authors' memory_estimation.xlsx, sheet BinaryNet") == "sheet"
    report = ReproduceReport(
        entries=[
            {
                "kind": "number",
                "notebook": "05",
                "name": name,
                "value": "1",
                "paper": "q",
                "source": src,
            }
            for name, src in (("a", "abstract"), ("r", "README.md"), ("s", "the sheet"))
        ]
    )
    rows = report.to_markdown().splitlines()
    assert rows[0].count("|") == rows[2].count("|") == 9
    assert rows[2].endswith("| 1 | | q (abstract) | | |")
    assert rows[3].endswith("| 1 | | | q (README.md) | |")
    assert rows[4].endswith("| 1 | | | | q (the sheet) |")


def test_cli_exits_non_zero_when_a_check_fails(tmp_path):
    _notebook(tmp_path / "nbs", "01_ok.ipynb", PASSING)
    _notebook(
        tmp_path / "nbs",
        "02_bad.ipynb",
        "from qatcore.course.report import check\ncheck('false claim', 1 > 2)",
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "qatcore",
            "reproduce",
            "--notebooks",
            str(tmp_path / "nbs"),
            "--build",
            str(tmp_path / "build"),
            "--figures",
            str(tmp_path / "figs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "| 02_bad | check | false claim | FAIL |" in run.stdout
    assert "FAILED: 1 check(s) failed" in run.stdout


def test_reproduce_without_notebooks_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        reproduce(tmp_path, tmp_path / "b", tmp_path / "f")


def test_reproduce_only_runs_the_notebooks_with_that_prefix(tmp_path):
    _notebook(tmp_path / "nbs", "01_ok.ipynb", PASSING)
    _notebook(
        tmp_path / "nbs",
        "02_bad.ipynb",
        "from qatcore.course.report import check\ncheck('false claim', 1 > 2)",
    )
    result = reproduce(tmp_path / "nbs", tmp_path / "build", tmp_path / "figs", only="01")
    assert result.ok and [r.name for r in result.runs] == ["01_ok"]
    with pytest.raises(FileNotFoundError, match="03"):
        reproduce(tmp_path / "nbs", tmp_path / "build", tmp_path / "figs", only="03")


def test_parameters_are_injected_after_the_parameters_cell_for_the_names_it_assigns():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "PAPER_SCALE = False\nEPOCHS, DATA_DIR = 3, None", metadata={"tags": ["parameters"]}
            ),
            nbformat.v4.new_code_cell("print(PAPER_SCALE)"),
        ]
    )
    chosen = inject_parameters(nb, {"PAPER_SCALE": True, "DATA_DIR": "/data", "DATASET": "mnist"})
    assert chosen == ["PAPER_SCALE", "DATA_DIR"]
    assert nb.cells[1].source.splitlines()[1:] == ["PAPER_SCALE = True", "DATA_DIR = '/data'"]
    assert nb.cells[1].metadata["tags"] == ["injected-parameters"] and len(nb.cells) == 3


SPLIT_PRINTING = """\
import sys, time
print("first", flush=True); time.sleep(0.3)
print("second", flush=True); time.sleep(0.3)
print("a warning", file=sys.stderr, flush=True); time.sleep(0.3)
print("third")
"""


def test_a_cells_printing_is_written_as_one_output_per_run_of_one_stream(tmp_path):
    # flushed prints a while apart reach the notebook as separate messages: how a cell's printing
    # is split depends on timing, so the written notebook joins them
    _notebook(tmp_path / "nbs", "01_print.ipynb", SPLIT_PRINTING)
    assert reproduce(tmp_path / "nbs", tmp_path / "build", tmp_path / "figs").ok
    outputs = nbformat.read(tmp_path / "build" / "01_print.ipynb", as_version=4).cells[0].outputs
    assert [(o.output_type, o.name, o.text) for o in outputs] == [
        ("stream", "stdout", "first\nsecond\n"),
        ("stream", "stderr", "a warning\n"),
        ("stream", "stdout", "third\n"),
    ]


def test_a_notebook_without_those_parameters_runs_as_it_is(tmp_path):
    _notebook(tmp_path / "nbs", "01_ok.ipynb", PASSING)
    result = reproduce(
        tmp_path / "nbs", tmp_path / "build", tmp_path / "figs", parameters={"DATASET": "mnist"}
    )
    assert result.ok
    with pytest.raises(ValueError, match="inplace"):
        reproduce(
            tmp_path / "nbs",
            tmp_path / "build",
            tmp_path / "figs",
            inplace=True,
            parameters={"X": 1},
        )


def test_a_failed_check_warns_instead_of_raising_outside_strict_mode(capsys, monkeypatch):
    from qatcore import runtime

    monkeypatch.setattr(runtime, "_strict", None)
    monkeypatch.setenv(runtime.STRICT_VARIABLE, "0")
    report.check("a claim at other settings", False, "42")
    assert "⚠ no longer holds: a claim at other settings (42)" in capsys.readouterr().out
    runtime.configure(strict=True)
    with pytest.raises(report.CheckFailed):
        report.check("a claim at other settings", False)
    runtime.configure(strict=False)
    report.check("a claim at other settings", False)
    monkeypatch.setattr(runtime, "_strict", None)
    monkeypatch.delenv(runtime.STRICT_VARIABLE)
    assert runtime.strict_checks()


def test_reproduce_runs_kernels_in_this_interpreter_whatever_python3_kernelspec_is_installed(
    tmp_path, monkeypatch
):
    broken = tmp_path / "jupyter" / "kernels" / "python3"
    broken.mkdir(parents=True)
    (broken / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    "/nonexistent/python",
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "another Python",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    _notebook(tmp_path / "nbs", "01_which.ipynb", "import sys\nprint(sys.executable)")
    seen = []
    result = reproduce(
        tmp_path / "nbs", tmp_path / "build", tmp_path / "figs", progress=seen.append
    )
    assert result.ok, result.runs
    assert [run.name for run in seen] == ["01_which"]
    executed = nbformat.read(tmp_path / "build" / "01_which.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == sys.executable
    assert (tmp_path / "build" / "01_which.kernel.log").exists()
