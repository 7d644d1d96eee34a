"""A REAL browser test: JupyterLab + headless Chromium run a notebook with the guidance slider, move the slider with
the keyboard, and check the displayed image changes (the kernel regenerated it through the widget's comm).

Needs Debian's Chromium (``apt-get install -y chromium`` -> /usr/bin/chromium) and Playwright's Python package
(requirements-dev.txt); skipped with the reason when Chromium is missing. Marker: ``browser``
(``pytest -m browser``).
The notebook uses a tiny CLIP + VAE + UNet saved in tmp (no demo data, no training), so the run takes ~30-60 s.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import build_tiny_unet, save_checkpoint

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("WORKBOOK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path, clip_dir: Path, vae_dir: Path, ckpt: Path) -> None:
    cells = [
        nbformat.v4.new_code_cell(
            "import torch\ntorch.set_num_threads(1)\n"
            "from helpers.frozen import FrozenModels, load_text_encoder, load_vae\n"
            "from helpers.generation import TextToImage\n"
            "from helpers.generation.widgets import guidance_sweep_demo\n"
            f"frozen = FrozenModels(load_text_encoder({str(clip_dir)!r}), load_vae({str(vae_dir)!r}), profile=None)\n"
            f"tti = TextToImage.from_checkpoint({str(ckpt)!r}, frozen)"),
        nbformat.v4.new_code_cell(
            'demo = guidance_sweep_demo(tti, "a red slime monster", seed=0, steps=4)\ndemo'),
    ]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})
    nbformat.write(nb, path)


@pytest.fixture()
def jupyter_lab(tmp_path, tiny_clip_dir, tiny_vae_dir):
    """A JupyterLab server on 127.0.0.1 (free port, token, no browser) whose root holds ``slider.ipynb``."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium) "
                    "or set WORKBOOK_CHROMIUM to a Chromium binary")
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    root = tmp_path / "lab"
    root.mkdir()
    ckpt = save_checkpoint(tmp_path / "run", 1, build_tiny_unet())
    _write_notebook(root / "slider.ipynb", tiny_clip_dir, tiny_vae_dir, ckpt)
    settings = tmp_path / "lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None", "--ServerApp.open_browser=False"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyter.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base, token, tmp_path / "jupyter.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp_path / "runtime", ignore_errors=True)


_IMAGE_PIXELS = """(img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    c.getContext('2d').drawImage(img, 0, 0);
    return c.toDataURL('image/png');
}"""


def test_moving_the_guidance_slider_changes_the_image_in_jupyterlab(jupyter_lab):
    from playwright.sync_api import sync_playwright

    base, token, log_path = jupyter_lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/slider.ipynb?token={token}")
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')")
            # wait for the kernel, then run every cell (the Run All command of the menu)
            page.wait_for_function("""() => {
                const w = window.jupyterapp.shell.currentWidget;
                return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
                    && w.sessionContext.session.kernel.status === 'idle';
            }""")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            image = page.locator("img.workbook-image").first
            image.wait_for(state="visible", timeout=90_000)
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            status = page.locator(".workbook-status").first
            page.wait_for_function("(el) => /generated in|cached/.test(el.textContent)",
                                   arg=status.element_handle(), timeout=30_000)
            src_before = image.get_attribute("src")
            pixels_before = image.evaluate(_IMAGE_PIXELS)
            status_before = status.inner_text()
            assert "7.5" in status_before

            # move the slider with the keyboard: End jumps to the maximum (15); the widget reports on release
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.focus()
            handle.press("End")
            page.wait_for_function(
                "([img, before]) => img.getAttribute('src') !== before && img.complete && img.naturalWidth > 0",
                arg=[image.element_handle(), src_before], timeout=60_000)
            page.wait_for_function(
                "(el) => /guidance scale 15: (generated in|cached)/.test(el.textContent)",
                arg=status.element_handle(), timeout=60_000)
            pixels_after = image.evaluate(_IMAGE_PIXELS)
            readout = page.locator(".widget-slider .widget-readout").first.inner_text()
            if os.environ.get("WORKBOOK_BROWSER_SCREENSHOT"):  # to look at what the browser showed
                page.screenshot(path=os.environ["WORKBOOK_BROWSER_SCREENSHOT"])
        except Exception as err:
            shot = log_path.with_name("browser-failure.png")
            page.screenshot(path=str(shot))
            raise AssertionError(f"browser test failed: {type(err).__name__}: {str(err)[:1500]}\n"
                                 f"screenshot {shot}; server log:\n{log_path.read_text()[-2000:]}") from None
        finally:
            browser.close()
    assert readout.strip() in ("15.0", "15")
    assert image_src_changed(src_before, pixels_before, pixels_after)


def image_src_changed(src_before: str, pixels_before: str, pixels_after: str) -> bool:
    """The picture itself changed (not only the blob URL): compare the decoded pixels."""
    return bool(src_before) and pixels_before != pixels_after
