"""The one helper notebooks use to state what they verified and which numbers they measured.

``check`` is an assertion that also prints what it verified; ``headline`` prints a measured
number beside our threshold for it and, apart from that, the paper's claim with its source. When ``qatcore reproduce`` runs a notebook it sets
``QATCORE_REPORT`` to a JSON-lines file, and every check and headline is appended there, so one
table can collect the verdicts of the whole course. ``save_figure`` writes into ``$QATCORE_FIGURES``
(set by ``qatcore reproduce`` to ``figures/``) and does nothing otherwise, so running a notebook
by hand or under test never rewrites the committed figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qatcore.runtime import strict_checks

REPORT_VARIABLE = "QATCORE_REPORT"
FIGURES_VARIABLE = "QATCORE_FIGURES"
NOTEBOOK_VARIABLE = "QATCORE_NOTEBOOK"


class CheckFailed(AssertionError):
    """A theory check or a claimed number did not hold."""


def _record(entry: dict[str, Any]) -> None:
    path = os.environ.get(REPORT_VARIABLE)
    if not path:
        return
    entry = {"notebook": os.environ.get(NOTEBOOK_VARIABLE, ""), **entry}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def check(name: str, passed: bool, detail: str = "") -> None:
    """Assert ``passed``; print ``✔ verified: name (detail)``, or raise ``CheckFailed``.

    Outside strict mode (``qatcore.configure(strict=False)``) a failed check prints a warning
    instead of raising, so a notebook run at other settings goes on to its end.
    """
    passed = bool(passed)
    _record({"kind": "check", "name": name, "passed": passed, "detail": detail})
    line = f"{name}" + (f" ({detail})" if detail else "")
    if passed:
        print(f"✔ verified: {line}")
    elif strict_checks():
        raise CheckFailed(f"✘ FAILED: {line}")
    else:
        print(
            f"⚠ no longer holds: {line}\n   This claim was checked at the notebook's default settings. "
            "Which setting you changed, and why it breaks the claim, is the interesting part: "
            "compare the numbers above with a run at the defaults."
        )


def headline(
    name: str,
    value: float | str,
    *,
    paper: str = "",
    source: str = "",
    threshold: str = "",
    digits: int = 3,
) -> None:
    """Print a measured number (rounded to ``digits``) and record it.

    ``paper`` is the claim as a paper states it, quoted, and ``source`` where it says so (paper and
    section, figure or table, or the authors' repository file); ``threshold`` is our own bar for
    the number. They are kept apart, so a reader never takes our bar for the paper's words.
    """
    if paper and not source:
        raise ValueError(
            f"headline {name!r}: a paper claim needs its source (paper and section, or file)"
        )
    shown = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    _record(
        {
            "kind": "headline",
            "name": name,
            "value": shown,
            "paper": paper,
            "source": source,
            "threshold": threshold,
        }
    )
    notes = ([f"our bar: {threshold}"] if threshold else []) + (
        [f"paper: {paper} [{source}]"] if paper else []
    )
    print(f"● {name}: {shown}" + (f"   ({'; '.join(notes)})" if notes else ""))


def save_figure(fig, filename: str) -> Path | None:
    """Write ``fig`` to ``$QATCORE_FIGURES/filename`` when that variable is set; return the path."""
    folder = os.environ.get(FIGURES_VARIABLE)
    if not folder:
        return None
    path = Path(folder) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path
