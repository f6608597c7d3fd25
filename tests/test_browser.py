"""JupyterLab in a real browser: the test starts JupyterLab, opens it in headless Chromium (Debian's `chromium`,
driven by Playwright with that executable; nothing is downloaded), runs notebook 00 on the tiny preset with
"Run All" from the menu, then opens notebook 07, moves its T_hat slider and checks that the widget's output changes.

The notebooks are the committed ones with their parameters cell edited, as a user would (tiny preset, tmp paths).
Screenshots go to test-artifacts/browser/ (printed). Without chromium or playwright the test skips, loudly:
`make test` installs both (apt-get install chromium; playwright is in the dev extras).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TOKEN = "dynad-browser-test"

pytestmark = [pytest.mark.slow, pytest.mark.notebooks, pytest.mark.browser]


def _loud_skip(why: str) -> None:
    msg = f"BROWSER TEST NOT RUN: {why}. `make test` installs it (apt-get install chromium; pip install playwright)."
    print("\n" + "!" * 100 + "\n" + msg + "\n" + "!" * 100, file=sys.stderr)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(stem: str, values: dict, folder: Path) -> Path:
    """notebooks/<stem>.ipynb with its parameters cell set to `values`, saved into `folder` (the lab's root)."""
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source + "\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """A JupyterLab server on a free port, root a tmp folder, its settings and workspaces kept in tmp too."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _loud_skip("the Python package playwright is not installed")
    if not Path(CHROMIUM).is_file():
        _loud_skip(f"no chromium executable ({CHROMIUM})")
    base = tmp_path_factory.mktemp("lab")
    root, home = base / "root", base / "home"
    root.mkdir()
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "news" and no update check: the page must not reach out or pop up toasts over the notebook.
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTER_RUNTIME_DIR": str(home / "rt"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
         "--allow-root"],  # CI runs as root
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"JupyterLab did not start: {(base / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield {"url": url, "root": root, "base": base}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser test screenshots: {ARTIFACTS}")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            lab["base"] / "chromium-profile", executable_path=CHROMIUM, args=CHROMIUM_FLAGS,  # a new, empty profile
            viewport={"width": 1400, "height": 1000},
        )  # fmt: skip
        try:
            yield context.new_page()
        finally:
            context.close()


def _open_and_run_all(page, lab: dict, name: str, done_text: str, timeout_s: float) -> None:
    """Open <name> in JupyterLab, wait for its kernel, Run > Run All Cells, wait until `done_text` is shown."""
    page.goto(f"{lab['url']}/lab/tree/{name}?token={TOKEN}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=120_000)  # the kernel has started
    page.click(".lm-MenuBar-item >> text=Run")
    page.click(".lm-Menu-item >> text=Run All Cells")
    try:
        page.wait_for_selector(f".jp-OutputArea-output >> text={done_text}", timeout=timeout_s * 1000)
    finally:
        page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}.png"), full_page=True)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] >> text=Traceback")
    assert errors.count() == 0, errors.first.inner_text()


def test_run_all_00_then_move_07s_slider(lab: dict, browser, shared_data) -> None:
    root, models = shared_data
    run_dir = lab["base"] / "run"
    _notebook("00_quickstart", {"preset": "tiny", "root": str(root), "run_dir": str(run_dir), "models_dir": str(models)},
              lab["root"])  # fmt: skip
    _notebook("07_step_size_explorer", {"run_dir": str(run_dir)}, lab["root"])
    page = browser

    _open_and_run_all(page, lab, "00_quickstart.ipynb", "done:", timeout_s=300)
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert page.locator(".jp-OutputArea-output >> text=image_auroc").count() >= 1
    # The progress bars are text in their final state, not widgets frozen at 0 %.
    assert page.locator(".jp-OutputArea-output >> text=inference: 100%").count() >= 1
    assert 0 <= metrics["image_auroc"] <= 1

    _open_and_run_all(page, lab, "07_step_size_explorer.ipynb", "done:", timeout_s=300)
    page.locator(".widget-slider").first.scroll_into_view_if_needed()
    info = page.locator(".widget-html-content >> text=shown: T_hat").first
    image = page.locator(".widget-output img").first
    before_info, before_src = info.inner_text(), image.get_attribute("src")
    # Move the slider from the keyboard: focus its handle, then step it right (continuous_update=False: the value
    # is sent when the key is released).
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel); return e && !e.innerText.includes(old); }",
        arg=[".widget-html-content", before_info.split("shown: ")[1]], timeout=60_000,
    )  # fmt: skip
    page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel); return e && e.getAttribute('src') !== old; }",
        arg=[".widget-output img", before_src], timeout=60_000,
    )  # fmt: skip
    # Three key presses can send three values: wait until the last one is shown and the kernel is idle, so the label,
    # the image and the screenshot agree with the slider.
    page.wait_for_function(
        "([sel, ro]) => { const e = document.querySelector(sel), r = document.querySelector(ro);"
        " return e && r && e.innerText.includes('shown: T_hat ' + r.innerText.trim() + ';'); }",
        arg=[".widget-html-content", ".widget-slider .widget-readout"], timeout=60_000,
    )  # fmt: skip
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "07_after_slider.png"), full_page=True)
    after_info = info.inner_text() if info.count() else page.locator(".widget-html-content").first.inner_text()
    assert after_info != before_info
    t_before = int(before_info.split("shown: T_hat ")[1].split(";")[0])
    t_after = int(after_info.split("shown: T_hat ")[1].split(";")[0])
    assert t_after > t_before, (before_info, after_info)
    assert t_after == int(page.locator(".widget-slider .widget-readout").first.inner_text()), after_info
