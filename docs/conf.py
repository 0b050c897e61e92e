"""Sphinx configuration of the course website (built offline by ``make site``)."""

project = "qatcore"
author = "The qatcore contributors"
copyright = "2026, the qatcore contributors (Apache-2.0)"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx-mathjax-offline",
]  # MathJax offline too
html_theme = "sphinx_book_theme"
html_title = "qatcore: low-precision networks, trained, counted and shipped"
html_theme_options = {"show_navbar_depth": 1, "home_page_in_toc": True}
html_last_updated_fmt = None

nb_execution_mode = (
    "off"  # the committed outputs are the course: the site never executes a notebook
)
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN: widgets get a static fallback instead
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
autodoc_inherit_docstrings = False  # torch's own docstrings (forward, …) are not this package's


def _plain_bars(app, what, name, obj, options, lines):
    """Docstrings write |x| for a magnitude; in reStructuredText that would be a substitution."""
    lines[:] = [line.replace("|", "\\|") for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _plain_bars)
