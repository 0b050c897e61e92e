"""Results the course reads rather than recomputes: long runs committed with the repository.

A notebook finds them through the package (``qatcore`` installed from a clone with ``pip install -e``,
as ``make`` does), never through a path relative to the notebook, so a copy of the notebook runs
from any folder.
"""

from __future__ import annotations

import json
from pathlib import Path

#: where the committed results of the course's long runs lie in a clone of the repository
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def committed_result_path(name: str) -> Path:
    """The path of the committed result ``name`` (e.g. ``"bnn.json"``); it may not exist yet."""
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ValueError(f"name must be a file name such as 'bnn.json', got {name!r}")
    return RESULTS / name


def committed_result(name: str) -> dict:
    """The JSON of the committed result ``name``; a clear error where it is not at hand."""
    path = committed_result_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no committed result {name!r} at {path}: the course's committed results come with a "
            "clone of the qatcore repository, installed with `pip install -e` (as `make` does)"
        )
    return json.loads(path.read_text(encoding="utf-8"))
