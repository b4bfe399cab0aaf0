"""JupyterLab on 127.0.0.1 and Debian's Chromium through Playwright, for the real-browser tests
(tests/vis/test_browser.py): a fresh server per test in a temporary folder, a notebook written
there, "Run all" from the menu, and the readers the tests poll."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
# On this closed network Chromium's background services only produce refused connections.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "output" / "browser_explorer.png"
def _skip_without_tools() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package 'chromium'; .ci/run installs it)")
    for module, package in (("playwright.sync_api", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"Python package '{package}' is not installed (pip install -e '.[test]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path, sources) -> None:
    import nbformat

    cells = [nbformat.v4.new_code_cell(src) for src in sources]
    cells[0].metadata["jupyter"] = {"source_hidden": True}  # the explorer, not the code, on screen
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    nbformat.write(nb, str(path))


class _Lab:
    """A JupyterLab server in ``root`` on a free loopback port; stopped by its PID."""

    def __init__(self, root: Path, tmp: Path):
        self.root, self.token, self.port = root, secrets.token_hex(16), _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "jupyterlab.log"
        env = dict(os.environ)
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTER_RUNTIME_DIR", "runtime"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                         ("IPYTHONDIR", "ipython")):
            (tmp / sub).mkdir(exist_ok=True)
            env[var] = str(tmp / sub)
        # No news or update checks (they would fetch from the internet and pop up a toast), and
        # the notebook's own kernel without a "Select Kernel" dialog.
        for plugin, values in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                               ("notebook-extension/tracker", {"autoStartDefaultKernel": True})):
            f = tmp / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        env.pop("JPY_SESSION_NAME", None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.open_browser=False", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly"],
            cwd=str(root), env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read()
            return json.loads(body) if body else None

    def wait_ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Shut the kernels down, then stop the server by its PID (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            try:
                for k in self.api("/api/kernels") or []:
                    self.api(f"/api/kernels/{k['id']}", method="DELETE")
            except OSError:
                pass
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # A kernel the server could not shut down lives in the server's own session (process group).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


def _wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _open_and_run_all(page, lab, notebook: str):
    """Open ``notebook`` in JupyterLab, wait for its kernel, run all cells (Run > Run All);
    returns (kernel_idle, prompts)."""
    page.goto(f"{lab.base}/lab/tree/{notebook}?reset&token={lab.token}")
    page.locator(".jp-NotebookPanel").first.wait_for(state="visible", timeout=40_000)
    indicator = page.locator(".jp-Notebook-ExecutionIndicator").first

    def kernel_idle():
        return indicator.get_attribute("data-status") == "idle"

    prompts = page.locator(".jp-InputPrompt")

    def kernel_connected():  # the indicator reads "idle" before the kernel is there
        dialog = page.locator(".jp-Dialog")
        if dialog.count():  # "Select Kernel" despite the setting: take the preferred one
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        try:
            kernels = lab.api("/api/kernels")
        except OSError:  # jupyter_server answers 500 while a kernel is still starting: ask again
            return False
        return kernels and kernels[0].get("connections", 0) > 0 and kernel_idle()

    _wait(kernel_connected, 40, "the kernel to start and the page to connect to it")
    page.keyboard.press("Control+b")  # close the file browser: room for the explorer

    def started():
        return any(re.search(r"\[(\*|\d+)\]", t) for t in prompts.all_inner_texts())

    for attempt in range(4):  # Run > Run All Cells (again if the kernel missed it)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        try:
            _wait(started, 8, "the cells to start")
            break
        except TimeoutError:
            if attempt == 3:
                raise
    return kernel_idle, prompts


def _state_of(path: Path):
    """A reader of the JSON state file the notebook writes on every redraw (None until there)."""
    def state():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    return state


@contextlib.contextmanager
def _session(tmp_path: Path, notebook: str, sources, viewport=(1400, 1100)):
    """JupyterLab on a fresh folder holding ``notebook`` (its cells ``sources``) and a headless
    Chromium page: yields (lab, page, state). Stops both; a failure carries the server's log."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    _write_notebook(root / notebook, sources)
    lab = _Lab(root, tmp_path)
    try:
        lab.wait_ready()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.set_default_timeout(30_000)
                yield lab, page, _state_of(root / "state.json")
            finally:
                browser.close()
    except Exception as e:
        raise AssertionError(f"{e}\n--- JupyterLab log ---\n{lab.log_tail()}") from e
    finally:
        lab.stop()


def _save_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


