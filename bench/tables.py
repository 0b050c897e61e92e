"""What every benchmark does with its table: print it, and write it under bench/results/ unless the
run was a quick smoke run (``--quick`` prints only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def publish(lines: list[str], output: Path, quick: bool, record: dict | None = None) -> str:
    """Join ``lines`` into the table, print it, write it to ``output`` unless ``quick``; the table. A ``record``
    (the measurements behind it) is written beside it as JSON (``output`` with ``.json``), unless ``quick``."""
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        if record is not None:
            output.with_suffix(".json").write_text(
                json.dumps(record, indent=1) + "\n", encoding="utf-8"
            )
    return text


def arguments(doc: str, results: Path, argv: list[str] | None = None) -> argparse.Namespace:
    """The options every timing benchmark takes: ``--repeats`` rounds, ``--quick`` (3 rounds, print
    only) and ``--output`` (default ``results``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="3 rounds, print only")
    parser.add_argument("--output", type=Path, default=results)
    return parser.parse_args(argv)
