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

import json
import os
import re
import time

from browser_session import SCREENSHOT, _save_atomic, _session, _skip_without_tools, _wait, _open_and_run_all

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


def test_explorer_in_jupyterlab_with_chromium(tmp_path):
    _skip_without_tools()
    from workbench.model_zoo import get_checkpoint_url

    weights = get_checkpoint_url("Shapes/panoptic_kp_R_50_FPN_small.yaml")
    assert os.path.isfile(weights), f"The embedded model's weights are missing: {weights}"
    t0 = time.monotonic()
    cells = [c % {"start": START_SCORE} if "%(" in c else c for c in NOTEBOOK_CELLS]
    with _session(tmp_path, "explorer.ipynb", cells) as (lab, page, state):
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


VIEWS_CELLS = [
    """import hashlib, json, os
from pathlib import Path

import torch

from workbench import inspect as wi
from workbench import model_zoo, vis
from workbench.data import MetadataCatalog
from workbench.data.datasets.shapes import get_shapes_dicts

torch.set_num_threads(1)
cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
model = model_zoo.get("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True).eval()
meta = MetadataCatalog.get("shapes_val")
with torch.no_grad():  # the pass the evaluator scores, two images
    tr = wi.trace(model, get_shapes_dicts("val", 2), cfg=cfg)
explorer = vis.TraceExplorer(model, tr, meta)
det = explorer.detections
det.set(score_thresh=0.5)

def record(_change=None):
    tabs = {}
    for name, t in explorer.tabs.items():
        png = t._png
        tabs[name] = dict(sha=hashlib.sha256(png).hexdigest(), size=list(vis.png_size(png)) if png else None,
                          renders=t.renders, stale=t._stale, zoom=t.zoom)
    inst = det.current.outputs[det.state["image"]]["instances"]
    kept = [int(r) for r in det._last.drawn["kept"]]
    state = dict(det.state, tabs=tabs, selected=explorer.tab.selected_index, image_selector=explorer.image.value,
                 titles=[explorer.tab.get_title(k) for k in range(len(explorer.tabs))],
                 kept=kept, boxes=[inst.pred_boxes.tensor[r].tolist() for r in kept],
                 names=[meta.thing_classes[int(inst.pred_classes[r])] for r in kept])
    Path("state.json.tmp").write_text(json.dumps(state))
    os.replace("state.json.tmp", "state.json")

for t in explorer.tabs.values():  # observers run in order: after the explorers' own redraws
    for control in list(t.controls.values()) + list(t.view_controls.values()):
        control.observe(record, names="value")
explorer.tab.observe(record, names="selected_index")
record()""",
    "explorer",
    """det.set(image=1)
det.set(score_thresh=%(off_step)r)  # off the slider's 0.01 step: held as the browser will show it
Path("end.json").write_text(json.dumps(dict(renders=det.renders, score=det.state["score_thresh"],
                                            image=explorer.image.value)))
record()""",
]
OFF_STEP = 0.333

IMG_JS = """(el) => ({natural: [el.naturalWidth, el.naturalHeight],
                  rect: [el.getBoundingClientRect().width, el.getBoundingClientRect().height],
                  top: el.getBoundingClientRect().top, bottom: el.getBoundingClientRect().bottom})"""
SHA_JS = """async (el) => {
    const buf = await (await fetch(el.src)).arrayBuffer();
    const d = await crypto.subtle.digest("SHA-256", buf);
    return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, "0")).join("");
}"""


def test_explorer_views_in_jupyterlab_with_chromium(tmp_path):
    """What the "Explorers and pictures" issue asks of the browser: every tab's picture at its
    native size (times the zoom), the image selector and the picture in agreement after set()
    from Python and after a slider move, an off-step value set from Python kept after "Run all"
    (no echo), a click on a box selecting that detection, class names in the tab titles; a
    screenshot of each tab in output/, and the slider-to-picture round trip timed."""
    _skip_without_tools()
    cells = [c % {"off_step": OFF_STEP} if "%(" in c else c for c in VIEWS_CELLS]
    out_dir = SCREENSHOT.parent
    timings = {}
    with _session(tmp_path, "views.ipynb", cells, viewport=(1280, 800)) as (lab, page, state):
        root = tmp_path / "root"
        kernel_idle, prompts = _open_and_run_all(page, lab, "views.ipynb")
        _wait(lambda: (root / "end.json").exists() and kernel_idle()
              and not any("[*]" in t for t in prompts.all_inner_texts()), 120, "all cells to finish")
        end = json.loads((root / "end.json").read_text())
        assert end["score"] == round(OFF_STEP, 2) and end["image"] == 1, end
        time.sleep(3)  # an echo from the browser would arrive by now
        s = _wait(state, 10, "the notebook's state file")
        assert s["score_thresh"] == round(OFF_STEP, 2) and s["tabs"]["detections"]["renders"] == end["renders"], \
            (s["score_thresh"], s["tabs"]["detections"]["renders"], end)

        score = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(r"^score$")))
        assert score.locator(".widget-readout").first.inner_text().strip() == "0.33"
        selector = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(r"^image$"))).first
        readout = selector.locator(".widget-readout")

        def shown_image():
            return page.locator(".jupyter-widgets.widget-image.wb-native:visible").first

        def agree(expect_image: int):
            st = state()
            if not (st and kernel_idle() and st["image_selector"] == expect_image == st["image"]):
                return None
            if readout.inner_text().strip() != str(expect_image):
                return None
            sha = shown_image().evaluate(SHA_JS)
            return st if sha == st["tabs"]["detections"]["sha"] else None

        _wait(lambda: agree(1), 20, "the selector, the kernel and the picture to agree on image 1 after set()")

        # The slider: image 1 -> 0 with the keyboard; the round trip to the new picture is timed.
        handle = selector.locator(".noUi-handle").first
        handle.focus()
        t0 = time.monotonic()
        handle.press("ArrowLeft")
        s0 = _wait(lambda: agree(0), 30, "the selector, the kernel and the picture to agree on image 0")
        timings["slider_to_picture_s"] = round(time.monotonic() - t0, 3)

        # Every tab: the picture at its native size, a screenshot.
        tabs = page.locator(".widget-tab .lm-TabBar-tab")
        names = list(s0["tabs"])
        for k, name in enumerate(names):
            tabs.nth(k).click()
            st = _wait(lambda: (lambda x: x if x and kernel_idle() and x["selected"] == k
                                and not x["tabs"][name]["stale"] and x["tabs"][name]["size"] else None)(state()),
                       30, f"the {name} tab to be drawn")
            img = shown_image()
            img.wait_for(state="visible")
            _wait(lambda: img.evaluate(SHA_JS) == st["tabs"][name]["sha"], 15, f"the {name} picture to arrive")
            geo = img.evaluate(IMG_JS)
            assert geo["natural"] == st["tabs"][name]["size"], (name, geo, st["tabs"][name])
            assert geo["rect"] == [float(v) for v in geo["natural"]], (name, geo)  # zoom 1: pixel for pixel
            _save_atomic(page.screenshot(full_page=False), out_dir / f"browser_tab_{name}.png")

        # The detections tab: the zoom, a click on a box, the class name in the tab titles.
        tabs.nth(names.index("detections")).click()
        _wait(lambda: (lambda x: x and x["selected"] == names.index("detections"))(state()), 10, "the detections tab")
        img = shown_image()
        geo = img.evaluate(IMG_JS)
        assert geo["bottom"] <= 800, f"the picture ends at y={geo['bottom']}: below a 1280x800 window"
        zoom = page.locator(".widget-dropdown:visible", has=page.locator(".widget-label", has_text=re.compile(r"^zoom$"))).first
        zoom.locator("select").select_option(label="2x")
        _wait(lambda: img.evaluate(IMG_JS)["rect"] == [2.0 * v for v in geo["natural"]], 10, "the picture at 2x")
        zoom.locator("select").select_option(label="1x")
        _wait(lambda: img.evaluate(IMG_JS)["rect"] == [float(v) for v in geo["natural"]], 10, "the picture at 1x")

        st = state()
        from workbench.vis.detection_explorer import boxes_containing
        import numpy as np

        boxes = np.asarray(st["boxes"])
        assert len(boxes), st
        x0, y0, x1, y1 = boxes[0]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        hits = boxes_containing(boxes, cx, cy)
        centres = (boxes[hits, :2] + boxes[hits, 2:]) / 2
        expect = hits[int(np.argmin(np.hypot(*(centres - [cx, cy]).T)))]
        t0 = time.monotonic()
        img.click(position={"x": cx, "y": cy})
        _wait(lambda: (lambda x: x if x and kernel_idle() and x["detection"] == st["kept"][expect] else None)(state()),
                       20, f"the click at ({cx:.0f}, {cy:.0f}) to select detection {st['kept'][expect]}")
        timings["click_to_selection_s"] = round(time.monotonic() - t0, 3)
        name = st["names"][expect]
        def titled():
            titles = [t.strip() for t in tabs.all_inner_texts()]
            return titles if f"masks: {name}" in titles and f"keypoints: {name}" in titles else None
        try:  # the titles follow the selection in the same kernel turn; the page may take a moment
            _wait(titled, 15, f"the masks and keypoints tab titles to name {name!r}")
        except TimeoutError as e:
            raise AssertionError(f"{e}; the tab bar reads {[t.strip() for t in tabs.all_inner_texts()]}") from None
        page.locator(".widget-html pre", has_text="from proposal").first.wait_for(state="visible", timeout=10_000)
        _save_atomic(page.screenshot(full_page=False), out_dir / "browser_tab_detections_clicked.png")
    _save_atomic(json.dumps(timings, indent=1).encode(), out_dir / "browser_timings.json")
    print(f"browser round trips: {timings}")
