"""Every notebook, opened in a real JupyterLab in a real Chromium: run all, no errors, every widget
shows a figure before it is touched and answers when one of its controls is moved (a dashboard that
trains, after its Run button), a screenshot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
RUN_TIMEOUT_MS = 900_000  # the slowest notebook runs in about 1.5 minutes; the browser adds little

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
PROMPTS = f"[...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent)"
# Run All has finished (or stopped at an error) once no cell is queued or running, the kernel is idle
# and some cell has run, and that has held for three polls in a row (a second apart).
RUN_FINISHED = f"""() => {{
  const prompts = {PROMPTS};
  const idle = document.querySelector("{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']");
  const settled = idle && prompts.some(t => /\\[\\d+\\]/.test(t)) && !prompts.some(t => t.includes('*'));
  window.qatcoreSettled = settled ? (window.qatcoreSettled || 0) + 1 : 0;
  return window.qatcoreSettled >= 3;
}}"""

#: each output that shows a widget (a notebook may have several: every one must answer)
WIDGET_OUTPUTS = f"{PANEL} .jp-OutputArea-output:has(.widget-vbox)"
#: what the n-th widget output shows: its text, and its images' sizes and tails
WIDGET_STATE = f"""(n) => [...[...document.querySelectorAll('{WIDGET_OUTPUTS}')][n].querySelectorAll('.widget-vbox')]
  .map(w => w.innerText + [...w.querySelectorAll('img')].map(i => i.src.length + i.src.slice(-64)).join())
  .join('|')"""


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def _accept_kernel_dialog(page) -> None:
    """JupyterLab may ask which kernel to start; a reader presses Select on the preferred one."""
    dialog = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        dialog.wait_for(timeout=5_000)
    except PlaywrightTimeout:
        return
    dialog.click()
    page.locator(".jp-Dialog").wait_for(state="detached", timeout=30_000)


def _move_a_control(page, widget) -> str:
    """Change the first dropdown (else checkbox, else slider) of ``widget`` (a widget output); say which."""
    dropdowns = widget.locator(".widget-dropdown select")
    if dropdowns.count():
        select = dropdowns.first
        options = select.locator("option").all_inner_texts()
        current = select.input_value()
        choice = next(o for o in options if o != current)
        select.select_option(choice)
        return f"dropdown → {choice}"
    checkboxes = widget.locator(".widget-checkbox input[type=checkbox]")
    if checkboxes.count():
        checkboxes.first.click()
        return "checkbox toggled"
    readout = widget.locator(".widget-slider .widget-readout").first
    readout.click()
    readout.press("ArrowRight")  # focus stays: type a new value over the readout
    page.keyboard.press("Control+A")
    value = "1" if readout.inner_text().strip() != "1" else "2"
    page.keyboard.type(value)
    page.keyboard.press("Enter")
    return f"slider → {value}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab_and_its_widget_answers(lab, browser, name, tmp_path):
    base, token, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: only this notebook open
        page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
            timeout=120_000
        )
        _accept_kernel_dialog(page)
        _run_all(page)
        page.wait_for_function(RUN_FINISHED, timeout=RUN_TIMEOUT_MS, polling=1000)
        errors = [
            text
            for text in page.locator(
                f"{PANEL} .jp-OutputArea-output[data-mime-type*='stderr']"
            ).all_inner_texts()
            if "Traceback" in text or "Error" in text.split("\n", 1)[0]
        ]
        assert not errors, f"{name}: a cell failed in JupyterLab:\n{errors[0][:2000]}"
        prompts = page.evaluate(f"() => {PROMPTS}")
        unrun = [i for i, text in enumerate(prompts) if not re.search(r"\[\d+\]", text)]
        assert not unrun, f"{name}: code cells {unrun} of {len(prompts)} did not run"
        widgets = page.locator(WIDGET_OUTPUTS)
        assert widgets.count() > 0, f"{name}: no widget rendered"
        moved = []
        for n in range(widgets.count()):  # every widget of the notebook answers
            widget = widgets.nth(n)
            widget.scroll_into_view_if_needed()
            before = page.evaluate(WIDGET_STATE, n)
            assert widget.locator("img").count() > 0, (
                f"{name}: widget {n} shows no figure before its controls are touched"
            )
            moved.append(_move_a_control(page, widget))
            run = widget.locator(".widget-vbox button", has_text=re.compile(r"^Run$"))
            if run.count():  # a dashboard that trains waits for its Run button
                run.first.click()
                moved[-1] += ", Run"
            page.wait_for_function(
                f"(n) => ({WIDGET_STATE})(n) !== {before!r}", arg=n, timeout=300_000, polling=500
            )
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
                timeout=300_000
            )
        widgets.first.scroll_into_view_if_needed()
    finally:
        page.screenshot(path=str(tmp_path / f"{Path(name).stem}.png"), full_page=True)
        page.close()
    assert moved
