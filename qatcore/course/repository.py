"""Whether qatcore runs from a clone of the course repository with the extras a command needs, and the
one line that says so when not.

The course's commands (``qatcore reproduce``, ``python -m qatcore.course.student``, ``… .site``,
``… .lint``) read the repository's notebooks, docs and committed results, with the libraries of an
optional extra (``course``: nbformat and the notebook runners; ``docs``: Sphinx; ``teach``: nbgrader).
Installed from a wheel, the package has the library but neither those files nor the extras: the
commands then say what is missing in one line and exit with status 2, before importing the extra's
libraries, so no traceback hides the reason.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: the folder above the package: a clone's root (``pip install -e``, as ``make`` does), or site-packages
ROOT = Path(__file__).resolve().parents[2]


def in_repository(root: Path = ROOT) -> bool:
    """Whether ``root`` is a clone of the course repository (its notebooks and pyproject.toml)."""
    return (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file()


def require_repository(command: str, notebooks: Path | None = None, root: Path = ROOT) -> None:
    """Return when ``root`` is a clone of the course (or ``notebooks`` is a folder at hand); else print
    one line naming ``command`` and what it needs, and exit with status 2."""
    if in_repository(root) or (notebooks is not None and Path(notebooks).is_dir()):
        return
    print(
        f"{command}: needs a clone of the qatcore course repository (its notebooks/), and this "
        f"qatcore is installed without one (at {root / 'qatcore'}): clone the course, run `make` there",
        file=sys.stderr,
    )
    raise SystemExit(2)


def require_extra(command: str, extra: str, *modules: str) -> None:
    """Return when each of ``modules`` (import names) is installed; else print one line naming
    ``command``, the missing modules and the ``extra`` that installs them, and exit with status 2."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return
    are = "is" if len(missing) == 1 else "are"
    print(
        f"{command}: needs {', '.join(missing)}, which {are} not installed "
        f"(the {extra} extra: pip install 'qatcore[{extra}]')",
        file=sys.stderr,
    )
    raise SystemExit(2)
