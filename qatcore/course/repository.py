"""Whether qatcore runs from a clone of the course repository, and the one line that says so when not.

The course's commands (``qatcore reproduce``, ``python -m qatcore.course.student``, ``… .site``) read
the repository's notebooks, docs and committed results. Installed from a wheel, the package has the
library but not those files: the commands then say so in one line and exit with status 2, before
importing the course extra's libraries, so no traceback hides the reason.
"""

from __future__ import annotations

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
