"""``qatcore reproduce``: run every notebook headless and print one table of checks and numbers.

Each notebook is executed with nbclient into a build folder (the committed notebooks are left
alone unless ``inplace``), with ``$QATCORE_REPORT`` pointing at a JSON-lines file that
``qatcore.course.report`` appends to and ``$QATCORE_FIGURES`` pointing at ``figures/``.

``parameters`` (for the paper-scale runs: ``PAPER_SCALE``, ``DATASET``, ``DATA_DIR``) are
injected papermill-style: a cell after each notebook's ``parameters`` cell reassigns those of the
names that cell assigns; a notebook without them runs as it is. So a parameters cell holds plain
assignments only, and settings derived from them (``if PAPER_SCALE: …``) go in the next cell.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import ipykernel.kernelspec
import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from qatcore import files
from qatcore.course.report import FIGURES_VARIABLE, NOTEBOOK_VARIABLE, REPORT_VARIABLE
from qatcore.runtime import PROGRESS_VARIABLE, STRICT_VARIABLE


@dataclass
class NotebookRun:
    name: str
    seconds: float
    error: str = ""


@dataclass
class ReproduceReport:
    runs: list[NotebookRun] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[dict]:
        return [e for e in self.entries if e["kind"] == "check" and not e["passed"]]

    @property
    def ok(self) -> bool:
        return bool(self.runs) and not self.failed_checks and not any(r.error for r in self.runs)

    def to_markdown(self) -> str:
        """One row per check and number: result, our threshold, and each quoted claim with its
        source in the column of that kind of source (``SOURCE_COLUMNS``)."""

        def row(*cells: str) -> str:
            return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

        lines = [
            row(
                "notebook",
                "kind",
                "what",
                "result",
                "our threshold",
                *(h for _, h in SOURCE_COLUMNS),
            ),
            "|---|---|---|---|---|" + "---|" * len(SOURCE_COLUMNS),
        ]
        blank = ("",) * len(SOURCE_COLUMNS)
        for e in self.entries:
            if e["kind"] == "check":
                result = "pass" if e["passed"] else "FAIL"
                lines.append(row(e["notebook"], "check", e["name"], result, "", *blank))
            else:
                quotes = {kind: "" for kind, _ in SOURCE_COLUMNS}
                if e.get("paper"):
                    quotes[source_kind(e["source"])] = f"{e['paper']} ({e['source']})"
                lines.append(
                    row(
                        e["notebook"],
                        "number",
                        e["name"],
                        str(e["value"]),
                        e.get("threshold", ""),
                        *(quotes[kind] for kind, _ in SOURCE_COLUMNS),
                    )
                )
        for r in self.runs:
            status = f"ERROR: {r.error}" if r.error else f"ran in {r.seconds:.0f} s"
            lines.append(row(r.name, "notebook", "executed", status, "", *blank))
        return "\n".join(lines)


#: Where a quoted claim comes from, one results column each: the paper itself (its abstract or
#: text), the authors' repository README, the authors' spreadsheet.
SOURCE_COLUMNS = (
    ("paper", "the paper (source)"),
    ("readme", "the authors' README (source)"),
    ("sheet", "the authors' sheet (source)"),
)


def source_kind(source: str) -> str:
    """The ``SOURCE_COLUMNS`` kind of a headline's ``source``: a README, a spreadsheet, else the paper."""
    words = source.lower()
    if "readme" in words:
        return "readme"
    if ".xlsx" in words or "sheet" in words:
        return "sheet"
    return "paper"


#: A smoke run of the whole course: one epoch, one seed. Its trained claims need the full run, so
#: it goes with ``strict=False`` (failed checks warn): it shows every cell and widget works.
QUICK_PARAMETERS = {"EPOCHS": 1, "SEEDS": 1, "CNN_EPOCHS": 1, "BNN_EPOCHS": 1}


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict) -> list[str]:
    """Reassign, after the cell tagged ``parameters``, the ``parameters`` that cell assigns; return their names."""
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            assigned = set(
                re.findall(r"^(\w+(?:\s*,\s*\w+)*)\s*=", cell.source, flags=re.MULTILINE)
            )
            names = {name.strip() for group in assigned for name in group.split(",")}
            chosen = [name for name in parameters if name in names]
            if chosen:
                source = "# injected by qatcore reproduce\n" + "".join(
                    f"{name} = {parameters[name]!r}\n" for name in chosen
                )
                injected = nbformat.v4.new_code_cell(
                    source, metadata={"tags": ["injected-parameters"]}
                )
                nb.cells.insert(index + 1, injected)
            return chosen
    return []


def _injected_index(nb: nbformat.NotebookNode, parameters: dict) -> int | None:
    """``inject_parameters``, returning the index of the cell it inserted (None when it inserted none)."""
    if not inject_parameters(nb, parameters):
        return None
    tags = [cell.metadata.get("tags", []) for cell in nb.cells]
    return next(i for i, t in enumerate(tags) if "injected-parameters" in t)


#: seconds to wait for a cell's last output once the kernel has replied (nbclient's default 4)
IOPUB_TIMEOUT = 10

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain_text(text: str) -> str:
    """``text`` without terminal escape codes (colours), for reports and logs that are not a terminal."""
    return _ANSI.sub("", text)


def merge_streams(nb: nbformat.NotebookNode) -> None:
    """Join each run of consecutive ``stream`` outputs of one name (stdout, stderr) into one output.

    How the kernel splits a cell's printing into messages depends on timing (when its output buffer
    is flushed), so without this two runs of the same notebook differ where their text does not.
    """
    for cell in nb.cells:
        merged: list = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (
                output.output_type == "stream"
                and previous is not None
                and previous.output_type == "stream"
                and previous.name == output.name
            ):
                previous.text += output.text
            else:
                merged.append(output)
        if "outputs" in cell:
            cell.outputs = merged


class _CellTracker:
    """Which cell is running, in the committed notebook's numbering (the injected cell not counted)."""

    def __init__(self, injected_at: int | None) -> None:
        self.injected_at = injected_at
        self.index: int | None = None

    def entered(self, cell, cell_index: int) -> None:
        self.index = cell_index

    def __str__(self) -> str:
        if self.index is None:
            return "before the first cell"
        if self.injected_at is not None:
            if self.index == self.injected_at:
                return "the injected parameters cell"
            if self.index > self.injected_at:
                return f"cell {self.index - 1}"
        return f"cell {self.index}"


def cell_error(exc: BaseException, timeout: int) -> str:
    """One line naming what stopped a notebook: the exception and its message, a timeout, a dead kernel."""
    if isinstance(exc, CellExecutionError):
        text = f"{exc.ename}: {exc.evalue}" if exc.evalue else exc.ename
    elif isinstance(exc, CellTimeoutError):
        text = f"CellTimeoutError: the cell ran past the timeout of {timeout} s and was stopped"
    elif isinstance(exc, DeadKernelError):
        text = "DeadKernelError: the kernel died (it exited or was killed) while running the cell"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(plain_text(text).split())  # one line


CURRENT_ENV_KERNEL = "qatcore-current-env"


class _CurrentEnvironmentKernels(KernelSpecManager):
    """Kernel specs where ``CURRENT_ENV_KERNEL`` is ipykernel in this very interpreter, whatever
    ``python3`` kernelspec the user has installed elsewhere."""

    def get_kernel_spec(self, kernel_name):
        if kernel_name == CURRENT_ENV_KERNEL:
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES,
                **ipykernel.kernelspec.get_kernel_dict(),
            )
        return super().get_kernel_spec(kernel_name)


def current_environment_kernel() -> AsyncKernelManager:
    """A kernel manager that starts ipykernel with ``sys.executable`` (the running interpreter)."""
    return AsyncKernelManager(
        kernel_name=CURRENT_ENV_KERNEL, kernel_spec_manager=_CurrentEnvironmentKernels()
    )


@contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def reproduce(
    notebooks: Path = Path("notebooks"),
    build: Path = Path("build/notebooks"),
    figures: Path = Path("figures"),
    inplace: bool = False,
    timeout: int = 1200,
    only: str = "",
    parameters: dict | None = None,
    progress: Callable[[NotebookRun], None] | None = None,
    strict: bool = True,
) -> ReproduceReport:
    """Execute every ``*.ipynb`` in ``notebooks`` (sorted) and collect their checks and numbers.

    ``only`` keeps the notebooks whose name starts with it (``"03"`` runs notebook 03 alone);
    ``parameters`` are injected into each notebook (never with ``inplace``: the committed
    notebooks keep their default run). Kernels run in this interpreter's environment;
    ``progress`` is called with each notebook's run as it finishes. ``strict=False`` lets failed
    checks warn instead of stopping a notebook (for runs at other settings, e.g. ``QUICK_PARAMETERS``).
    """
    if parameters and inplace:
        raise ValueError(
            "parameters cannot be combined with inplace: the committed notebooks keep the default run"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be an int >= 1 (seconds per cell), got {timeout!r}")
    paths = sorted(Path(notebooks).glob(f"{only}*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks ({only}*.ipynb) found in {notebooks}")
    build = files.output_folder(build, "build")
    figures = files.output_folder(figures, "figures")
    with files.exclusive_lock(build / ".reproduce.lock", "qatcore reproduce"):
        return _run_all(paths, build, figures, inplace, timeout, parameters, progress, strict)


def _run_all(
    paths, build, figures, inplace, timeout, parameters, progress, strict
) -> ReproduceReport:
    """``reproduce``'s loop, run while this process holds the build folder's lock."""
    report_file = build / "report.jsonl"
    report_file.write_text("")
    report = ReproduceReport()
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for (
            cell
        ) in nb.cells:  # no timestamps: a rerun changes a notebook only where its outputs change
            cell.metadata.pop("execution", None)
        injected_at = _injected_index(nb, parameters or {})
        started = time.monotonic()
        error = ""
        where = _CellTracker(injected_at=injected_at)
        with _environment(
            **{
                REPORT_VARIABLE: str(report_file.resolve()),
                FIGURES_VARIABLE: str(figures.resolve()),
                NOTEBOOK_VARIABLE: path.stem,
                PROGRESS_VARIABLE: "0",
                STRICT_VARIABLE: "1" if strict else "0",
                "PYTHONHASHSEED": "0",  # sympy's printed expressions do not depend on hash order
            }
        ):
            client = NotebookClient(
                nb,
                km=current_environment_kernel(),
                timeout=timeout,
                iopub_timeout=IOPUB_TIMEOUT,
                shutdown_kernel="immediate",
                record_timing=False,
                on_cell_execute=where.entered,
                resources={"metadata": {"path": str(path.parent)}},
            )
            try:  # the kernel's own log (start-up warnings, shutdown) goes to a file beside the copy
                with open(build / f"{path.stem}.kernel.log", "w", encoding="utf-8") as log:
                    # cleanup_kc: the kernel is shut down (killed if it hangs) whatever happened
                    client.execute(stdout=log, stderr=log, cleanup_kc=True)
            except (CellExecutionError, CellTimeoutError, RuntimeError) as exc:  # RuntimeError:
                # a dead kernel (DeadKernelError) or one that never started
                error = f"{where}: {cell_error(exc, timeout)}"
        report.runs.append(NotebookRun(path.stem, time.monotonic() - started, error))
        if progress is not None:
            progress(report.runs[-1])
        merge_streams(nb)
        nbformat.write(nb, path if inplace else build / path.name)
    report.entries = [json.loads(line) for line in report_file.read_text().splitlines() if line]
    return report
