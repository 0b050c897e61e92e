"""``python -m qatcore.course.site``: the course as a static website, built offline.

The committed notebooks are rendered with their stored outputs (nothing is executed) by Sphinx,
myst-nb and the book theme, with the pages of ``docs/`` (landing page, results, glossary, sources),
a figure gallery from ``figures/`` and an API reference from the docstrings. A widget cannot move on
a static page: its output is replaced by the last figure it drew, when it drew one, and a note.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from qatcore.course.repository import require_extra, require_repository

if TYPE_CHECKING:
    import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    "*This is an interactive widget: open the notebook in JupyterLab (`make lab`) to move it."
    " The page shows the state it was last drawn in.*"
)
ROOT = Path(__file__).resolve().parents[2]


def static_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` with each widget output replaced by a note, keeping the figures the widget drew."""
    import nbformat

    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code" or not any(
            WIDGET_VIEW in o.get("data", {}) for o in cell.outputs
        ):
            continue
        kept = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        note = nbformat.v4.new_output(
            "display_data", data={"text/markdown": WIDGET_NOTE, "text/plain": WIDGET_NOTE}
        )
        cell.outputs = [note, *kept]
    return nb


def gallery_page(figures: Path) -> str:
    """A Markdown page showing every PNG in ``figures`` under its file name."""
    lines = ["# Figure gallery", "", "Every figure `make reproduce` writes, as committed.", ""]
    for figure in sorted(figures.glob("*.png")):
        lines += [
            f"## {figure.stem.replace('_', ' ')}",
            "",
            f"![{figure.stem}](figures/{figure.name})",
            "",
        ]
    return "\n".join(lines)


def api_page(modules: list[str]) -> str:
    """A Markdown page of autodoc directives, one section per module."""
    lines = ["# API reference", "", "Generated from the docstrings of the `qatcore` package.", ""]
    for module in modules:
        # a package re-exports its modules' names: they are indexed where they are defined
        package = (ROOT / module.replace(".", "/") / "__init__.py").is_file()
        lines += [
            f"## `{module}`",
            "",
            "```{eval-rst}",
            f".. automodule:: {module}",
            "   :members:",
            *(["   :no-index:"] if package else []),
            "```",
            "",
        ]
    return "\n".join(lines)


def public_modules() -> list[str]:
    """Every module of the package that a reader may import (no private ``_`` names, no ``__main__``)."""
    package = ROOT / "qatcore"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def prepare(source: Path, root: Path = ROOT) -> Path:
    """Write the Sphinx source folder: ``docs/``, static copies of the notebooks, gallery, API pages."""
    import nbformat

    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(root / "docs", source)
    (source / "notebooks").mkdir()
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nbformat.write(
            static_notebook(nbformat.read(path, as_version=4)), source / "notebooks" / path.name
        )
    shutil.copytree(root / "figures", source / "figures")
    (source / "gallery.md").write_text(gallery_page(root / "figures"), encoding="utf-8")
    (source / "api.md").write_text(api_page(public_modules()), encoding="utf-8")
    return source


def build(out: Path = ROOT / "build" / "site", root: Path = ROOT) -> Path:
    """Build the HTML site into ``out`` (warnings are errors, so a broken reference fails the build)."""
    from sphinx.cmd.build import build_main

    source = prepare(out.parent / "site-source", root)
    status = build_main(["-b", "html", "-W", "--keep-going", "-q", str(source), str(out)])
    if status:
        raise RuntimeError(f"sphinx-build failed with status {status}; see the warnings above")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qatcore.course.site", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "site", help="folder for the HTML site"
    )
    args = parser.parse_args(argv)
    command = "python -m qatcore.course.site"
    require_repository(command)
    require_extra(command, "course", "nbformat")
    require_extra(
        command, "docs", "sphinx", "myst_nb", "sphinx_book_theme", "sphinx-mathjax-offline"
    )
    try:
        out = build(args.out)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"site written to {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
