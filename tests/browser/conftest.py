"""A real JupyterLab server on a free loopback port, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from qatcore.course.reproduce import QUICK_PARAMETERS, inject_parameters
from qatcore.distributed import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """``(base_url, token, folder)`` of a running JupyterLab on copies of notebooks/ without their
    outputs (so every output seen comes from this run, and the committed files are never autosaved
    over); news and update checks are switched off, as nothing may go to the network.

    The copies get the quick parameters (one epoch, one seed) and checks warn instead of raising:
    this test is about the page and its widgets; the full run's claims are nbval's to check."""
    course = tmp_path_factory.mktemp("course")
    folder = course / "notebooks"
    folder.mkdir()
    (course / "bench").symlink_to(
        ROOT / "bench"
    )  # notebooks read committed bench results from ../bench
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(notebook, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        inject_parameters(nb, QUICK_PARAMETERS)
        nbformat.write(nb, folder / notebook.name)
    settings = tmp_path_factory.mktemp("lab-settings")
    notification = (
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    )
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # every cell in the page, not only those scrolled into view, so the test can read every prompt
    notebook_settings = (
        settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    )
    notebook_settings.parent.mkdir(parents=True)
    notebook_settings.write_text(json.dumps({"windowingMode": "none"}))
    port, token = free_port(), secrets.token_hex(16)
    log = open(folder / "jupyter.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={folder}",
            "--ServerApp.open_browser=False",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "QATCORE_PROGRESS": "1",
            "QATCORE_STRICT": "0",
            "QATCORE_THREADS": "2",
            "OMP_NUM_THREADS": "2",
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
        },
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                tail = (folder / "jupyter.log").read_text()[-2000:]
                raise RuntimeError(f"jupyter lab did not start: {tail}") from None
            time.sleep(0.5)
    yield base, token, folder
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def browser():
    """Chromium, headless. Fails (never skips) with a clear message when it cannot start."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as missing:
        pytest.fail(
            f"Playwright for Python is not installed ({missing}); `pip install -e '.[test]'`"
        )
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no browser at {CHROMIUM}: install Debian's chromium (`apt-get install chromium`)"
        )
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
        except Exception as error:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {error}")
        yield chromium
        chromium.close()
