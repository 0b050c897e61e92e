"""The ``qatcore`` command line: thin faces on the library's functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _reproduce(args: argparse.Namespace) -> int:
    from qatcore.reproduce import reproduce

    report = reproduce(Path(args.notebooks), Path(args.build), Path(args.figures), inplace=args.inplace)
    print(report.to_markdown())
    if report.ok:
        print(f"\nall {len(report.runs)} notebooks ran; every check passed")
        return 0
    print(f"\nFAILED: {len(report.failed_checks)} check(s) failed; "
          f"{sum(bool(r.error) for r in report.runs)} notebook(s) stopped with an error")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qatcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("reproduce", help="run every notebook headless; print the report table")
    rep.add_argument("--notebooks", default="notebooks", help="folder of notebooks (default: notebooks)")
    rep.add_argument("--build", default="build/notebooks", help="where executed copies go")
    rep.add_argument("--figures", default="figures", help="where figures are written")
    rep.add_argument("--inplace", action="store_true", help="rewrite the notebooks themselves")
    rep.set_defaults(run=_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
