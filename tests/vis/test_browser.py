"""The explorer in a real browser: JupyterLab on 127.0.0.1, headless Chromium through Playwright.

The test writes a small explorer notebook (the embedded model traced on the first shapes
validation image, through the evaluator's test-time input) into a temporary folder, starts JupyterLab there with a token, opens the
notebook with ``?reset`` in Debian's Chromium, runs all cells from the Run menu, lowers the score
slider with the keyboard, waits for the kernel to be idle and checks that the picture changed,
both in the page and on the kernel side (the notebook writes the explorer's state to a file on
every redraw). The screenshot goes to ``output/browser_explorer.png``.

Needs Debian's ``chromium`` (/usr/bin/chromium; ``.ci/run`` installs it), and the ``playwright``
and ``jupyterlab`` packages (test extras). Without one of them the test is skipped with the
reason. Playwright's own browser download (``playwright install``) is never used.
"""

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
START_SCORE, END_SCORE = 1.0, 0.5  # nothing is drawn above 1.0; the keyboard lowers it to 0.5
PAGE_STEP = 0.05  # noUiSlider: PageDown moves 5 steps of the slider's 0.01

NOTEBOOK_CELLS = [
    """import json, os
from pathlib import Path

import torch

from workbench import inspect as wi
from workbench import model_zoo, vis
from workbench.data import MetadataCatalog
from workbench.data.datasets.shapes import get_shapes_dicts

torch.set_num_threads(1)
cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
model = model_zoo.get("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True).eval()
d = get_shapes_dicts("val", 1)[0]  # image 0 of shapes_val_100
with torch.no_grad():  # the pass the evaluator scores: its test-time resize, the ground truth joined
    tr = wi.trace(model, d, cfg=cfg)
explorer = vis.TraceExplorer(model, tr, MetadataCatalog.get("shapes_val"))
det = explorer.detections
scores = tr.outputs[0]["instances"].scores.numpy()
det.set(score_thresh=%(start)r)

def record(_change=None):
    drawn = det.last.drawn
    state = dict(det.state, boxes=len(drawn["boxes"]), masks=int(drawn["masks"]),
                 keypoints=len(drawn["keypoints"]), renders=det.renders,
                 expected=int((scores > det.state["score_thresh"]).sum()))
    Path("state.json.tmp").write_text(json.dumps(state))
    os.replace("state.json.tmp", "state.json")

for control in det.controls.values():  # observers run in order: after the explorer's redraw
    control.observe(record, names="value")
record()
explorer.tab.selected_index = 2  # the detections tab""",
    "explorer",
]


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


def _write_notebook(path: Path, sources=None) -> None:
    import nbformat

    cells = [nbformat.v4.new_code_cell(src % {"start": START_SCORE} if "%(" in src else src)
             for src in (sources or NOTEBOOK_CELLS)]
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
def _session(tmp_path: Path, notebook: str, sources=None):
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
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
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


def test_explorer_in_jupyterlab_with_chromium(tmp_path):
    _skip_without_tools()
    from workbench.model_zoo import get_checkpoint_url

    weights = get_checkpoint_url("Shapes/panoptic_kp_R_50_FPN_small.yaml")
    assert os.path.isfile(weights), f"The embedded model's weights are missing: {weights}"
    t0 = time.monotonic()
    with _session(tmp_path, "explorer.ipynb") as (lab, page, state):
        try:
            kernel_idle, prompts = _open_and_run_all(page, lab, "explorer.ipynb")
            slider = page.locator(".widget-slider", has=page.locator(
                ".widget-label", has_text=re.compile(r"^score$"))).first
            slider.wait_for(state="visible", timeout=60_000)
            _wait(lambda: kernel_idle() and not any("[*]" in t for t in prompts.all_inner_texts()),
                  30, "all cells to finish")
            before_state = _wait(state, 10, "the notebook's state file")
            assert before_state["score_thresh"] == START_SCORE and before_state["boxes"] == 0, before_state

            image = page.locator(".jupyter-widgets.widget-image:visible").first
            image.wait_for(state="visible")
            readout = slider.locator(".widget-readout")
            assert readout.inner_text().strip() == f"{START_SCORE:.2f}"
            before_png = image.screenshot()

            # The keyboard: focus the slider's handle and page down to END_SCORE.
            handle = slider.locator(".noUi-handle").first
            handle.focus()
            for _ in range(round((START_SCORE - END_SCORE) / PAGE_STEP)):
                handle.press("PageDown")
            _wait(lambda: readout.inner_text().strip() == f"{END_SCORE:.2f}", 10,
                  f"the slider readout to show {END_SCORE:.2f}")

            def settled():
                s = state()
                return kernel_idle() and s and abs(s["score_thresh"] - END_SCORE) < 1e-6 and s
            try:
                after_state = _wait(settled, 30, "the kernel to redraw at the new threshold and go idle")
            except TimeoutError as e:
                raise TimeoutError(f"{e}; last state {state()}") from None
            time.sleep(0.5)  # let the front end swap the image in
            after_png = _wait(lambda: (lambda b: b if b != before_png else None)(image.screenshot()),
                              10, "the rendered image to change")
            assert after_state["boxes"] == after_state["expected"] >= 1, after_state
            assert after_state["masks"] == after_state["boxes"]
            assert after_state["renders"] > before_state["renders"]
            assert after_png != before_png

            # Choose the top detection in the dropdown: its provenance and crop appear beside.
            dropdown = page.locator(".widget-dropdown", has=page.locator(
                ".widget-label", has_text=re.compile(r"^detection$"))).first.locator("select")
            dropdown.select_option(index=1)
            chosen = _wait(lambda: (lambda s: kernel_idle() and s and s["detection"] >= 0 and s)(state()),
                           20, "the kernel to show the chosen detection")
            info = page.locator(".widget-html pre", has_text="from proposal").first
            info.wait_for(state="visible", timeout=10_000)
            assert chosen["boxes"] == after_state["boxes"], chosen  # the outline is not a detection
            image.scroll_into_view_if_needed()
            time.sleep(0.3)
            _save_atomic(page.screenshot(full_page=False), SCREENSHOT)
            SCREENSHOT.with_name("browser_explorer_failure.png").unlink(missing_ok=True)
        except Exception:
            try:
                _save_atomic(page.screenshot(), SCREENSHOT.with_name("browser_explorer_failure.png"))
            except Exception:
                pass
            raise
    print(f"browser test: {time.monotonic() - t0:.1f} s; screenshot {SCREENSHOT}")


ERROR_CELLS = [
    """import json, os, tempfile
from pathlib import Path

import torch

from workbench import model_zoo, vis
from workbench.data import DatasetCatalog, build_detection_test_loader
from workbench.data.datasets.shapes import register_shapes
from workbench.engine import DefaultPredictor
from workbench.evaluation import COCOEvaluator, inference_on_dataset

torch.set_num_threads(1)
if "shapes_val_first3_browser" not in DatasetCatalog.list():
    register_shapes("shapes_val_first3_browser", "val", 3, 0)
cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
cfg.MODEL.DEVICE = "cpu"
predictor = DefaultPredictor(cfg)
ev = COCOEvaluator("shapes_val_first3_browser", tasks=("bbox",), distributed=False,
                   output_dir=tempfile.mkdtemp())
inference_on_dataset(predictor.model, build_detection_test_loader(cfg, "shapes_val_first3_browser"),
                     ev, progress=False)
ex = vis.ErrorExplorer(ev, breakdown=ev.error_breakdown("bbox"), predictor=predictor)

def record(_change=None):
    err = ex.last.drawn["error"]
    state = dict(ex.state, rows=len(ex.table), renders=ex.renders,
                 error=None if err is None else {"kind": err["kind"], "image": str(err["image_id"])})
    Path("state.json.tmp").write_text(json.dumps(state))
    os.replace("state.json.tmp", "state.json")

for control in ex.controls.values():
    control.observe(record, names="value")
record()""",
    "ex",
]


def test_error_explorer_in_jupyterlab_with_chromium(tmp_path):
    """The dataset explorer in the real browser: click a row of the error table, see the error
    on its image and its provenance."""
    _skip_without_tools()
    with _session(tmp_path, "errors.ipynb", ERROR_CELLS) as (lab, page, state):
        kernel_idle, prompts = _open_and_run_all(page, lab, "errors.ipynb")
        table = page.locator(".widget-select", has=page.locator(
            ".widget-label", has_text=re.compile(r"^errors$"))).first.locator("select")
        table.wait_for(state="visible", timeout=90_000)
        _wait(lambda: kernel_idle() and not any("[*]" in t for t in prompts.all_inner_texts()),
              60, "all cells to finish")
        before = _wait(state, 10, "the notebook's state file")
        assert before["row"] == -1 and before["error"] is None and before["rows"] > 0, before
        table.select_option(index=1)  # the first error of the table
        chosen = _wait(lambda: (lambda s: kernel_idle() and s and s["row"] == 0 and s)(state()),
                       30, "the kernel to show the chosen error")
        assert chosen["error"] is not None and chosen["renders"] > before["renders"], chosen
        page.locator(".widget-html pre").first.wait_for(state="visible", timeout=15_000)
        text = page.locator(".widget-html pre").first.inner_text()
        assert "from proposal" in text or "WhyMissed" in text, text
