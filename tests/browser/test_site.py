"""The course website, built offline from the committed notebooks and opened in Chromium: every
page loads, every internal link resolves, every figure loads, no page shows a traceback, nothing
comes from the network and the mathematics is typeset (MathJax ships with the site)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from qatcore.course import site

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
PAGES = ["index", "results", "gallery", "api", *(f"notebooks/{name}" for name in NOTEBOOKS)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    try:
        import myst_nb  # noqa: F401
    except ImportError:
        pytest.fail(
            "the site needs the docs extra: pip install -e '.[docs]' (make test-all installs it)"
        )
    return site.build(tmp_path_factory.mktemp("site") / "html")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site-screenshots")
    print(f"\nsite screenshots in {folder}")
    return folder


@pytest.mark.parametrize("page", PAGES)
def test_site_page_loads_with_its_figures_links_and_no_traceback(built, browser, screenshots, page):
    path = built / f"{page}.html"
    assert path.exists(), f"{page}.html was not built"
    tab = browser.new_page(viewport={"width": 1300, "height": 900})
    try:
        tab.goto(path.as_uri())
        tab.wait_for_load_state("load")
        text = tab.locator("body").inner_text()
        assert "Traceback (most recent call last)" not in text, f"{page} shows a Python traceback"
        broken_images = tab.evaluate(
            "() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        assert not broken_images, f"{page}: figures that do not load: {broken_images}"
        links = tab.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
        missing = sorted(
            {
                link
                for link in links
                if link.startswith("file:") and not Path(unquote(urlparse(link).path)).exists()
            }
        )
        assert not missing, f"{page}: internal links to nothing: {missing}"
        if page.startswith("notebooks/"):
            assert tab.locator("img").count() > 0, (
                f"{page}: a notebook page without a single figure"
            )
        remote = tab.evaluate(
            "() => [...document.querySelectorAll('script[src], img[src], link[rel~=stylesheet], "
            "link[rel=preload]')].map(e => e.src || e.href).filter(u => /^https?:/.test(u))"
        )
        assert not remote, f"{page} loads from the network: {remote}"
        if tab.locator(".math").count():  # typeset by the site's own copy of MathJax
            tab.wait_for_function(
                "() => document.querySelector('mjx-container') !== null", timeout=60_000
            )
    finally:
        long = (
            tab.evaluate("() => document.body.scrollHeight") > 20_000
        )  # the API page: its first screen
        tab.screenshot(path=str(screenshots / f"{page.replace('/', '_')}.png"), full_page=not long)
        tab.close()


def test_widgets_have_a_static_fallback_with_a_note():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "05_bnn_training_memory.ipynb", as_version=4)
    static = site.static_notebook(nb)
    outputs = [o for c in static.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(site.WIDGET_VIEW in o.get("data", {}) for o in outputs)
    assert any(o.get("data", {}).get("text/markdown") == site.WIDGET_NOTE for o in outputs)
