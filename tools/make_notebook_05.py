"""Write notebooks/05_explorer.ipynb from its cells and execute it in place.

Run from the repo root: .venv/bin/python tools/make_notebook_05.py

The notebook drives the ipywidgets explorers of workbench.vis from Python on a trace of the
embedded model (model_zoo "Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True) and asserts what
each one drew. Its printed output depends only on the model's weights, so the notebook is
regenerated whenever the packaged weights change; the assertions hold for any model that finds
at least one shape with a score above 0.5 on the first validation image.

nbval: cells whose output is a widget display carry the ``nbval-ignore-output`` tag (a widget's
text/plain repr holds its whole state, PNG bytes included, and its model id changes from run to
run); what they show is asserted in the code cells around them. Pictures are also shown as
static PNGs (``IPython.display.Image``), which nbval does not compare, so the stored notebook
shows the figures even where no kernel is running.
"""
import sys
from pathlib import Path

import nbformat

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell


def widget_display(source: str):
    """A cell that displays a widget: nbval runs it but does not compare its output (the repr
    holds the widget's whole state and model ids); the cells around it assert what it shows."""
    return code(source, metadata={"tags": ["nbval-ignore-output"]})

cells = [
    md("""# 05 · Explorers: a detector's stages under sliders

`workbench.vis` puts an ipywidgets explorer on top of a `workbench.inspect.Trace`: one tab per
stage the model has (features, proposals, detections, masks, keypoints, segmentation), an image
selector shared by all tabs, and sliders that re-threshold the **cached** trace: moving the score,
NMS or top-k slider never runs the backbone or the heads again.

Every explorer is a plain class: `explorer.set(name=value, ...)` does what moving the widgets
does, `explorer.click(x, y)` what a click on the picture does, `explorer.state` reads them back,
and after each redraw `explorer.last.drawn` records what is on the picture (boxes, labels, masks,
arrays...) and `explorer.png` holds the PNG bytes shown in the `widgets.Image`, at its own pixel
size (times the `zoom` you pick: pictures are never stretched to the page). This notebook drives each explorer from Python and checks the picture against
the trace. In JupyterLab you can do the same with the mouse on the widget displays below (they
need a running kernel; `make lab` opens this folder).

The model is workbench's embedded one: a small Panoptic FPN with mask and keypoint heads,
trained on the procedural shapes dataset, run here on three validation images, resized as the
evaluator resizes them (one batch of three: the padding to a common size is the only difference
from the evaluator's one-image batches)."""),
    code("""import numpy as np
import torch
from IPython.display import Image, display
from PIL import Image as PILImage

from workbench import inspect as wi
from workbench import model_zoo, vis
from workbench.data import DatasetCatalog, MetadataCatalog

torch.set_num_threads(1)  # deterministic and fast enough for three small images
cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
model = model_zoo.get("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True).eval()
metadata = MetadataCatalog.get("shapes_val")
dicts = DatasetCatalog.get("shapes_val_100")[:3]

with torch.no_grad():  # the dataset dicts through the evaluator's test-time transform, in one batch
    tr = wi.trace(model, dicts, cfg=cfg)
inputs = tr.inputs

print(type(model).__name__, "input format", model.input_format, "| trace:", tr.architecture)
for d, out in zip(dicts, tr.outputs):
    print(f"{d['width']}x{d['height']}: {len(d['annotations'])} shapes in the ground truth; outputs {sorted(out)}")
assert tr.architecture == "panoptic_fpn" and tr.num_images == 3
assert all({"instances", "sem_seg", "panoptic_seg"} <= set(out) for out in tr.outputs)"""),
    md("""## The trace explorer

`TraceExplorer` makes one tab per stage the traced model has and one image slider above them. The
cell below displays it (with a kernel: a live widget; in a stored notebook: only its text).
A forward hook on the backbone counts how often the model runs from here on: the sliders
never run it."""),
    code("""explorer = vis.TraceExplorer(model, tr, metadata)
backbone_calls = []
hook = model.backbone.register_forward_hook(lambda *args: backbone_calls.append(1))
print("tabs:", list(explorer.tabs))
assert list(explorer.tabs) == ["features", "proposals", "detections", "masks", "keypoints", "segmentation"]
titles = [explorer.tab.get_title(k) for k in range(len(explorer.tabs))]
print("tab titles:", titles)  # the masks and keypoints tabs name the class of their detection
assert [t.split(":")[0] for t in titles] == list(explorer.tabs)
assert all(ex.png[:4] == b"\\x89PNG" for ex in explorer.tabs.values())
for name, ex in explorer.tabs.items():  # every picture at its native size: element == PNG x zoom
    w, h = vis.png_size(ex.png)
    assert (ex.image.layout.width, ex.image.layout.height) == (f"{w}px", f"{h}px"), name"""),
    widget_display("""explorer.tab.selected_index = 2  # open on the detections tab
explorer"""),
    md("""## Detections: score threshold, class filter, toggles

The detections tab starts at a score threshold of 0.5 (or the model's own test threshold if
that is higher). Values set from Python are snapped to the slider's step before they are sent
(0.333 is held as 0.33, what the slider shows), so the browser never has to correct one and send
it back to the kernel after later cells have run; a value outside a slider's range is an error. `drawn["kept"]` are the rows of the image's `Instances` on the picture and
`drawn["boxes"]` their boxes in image pixels: exactly the detections above the slider."""),
    code("""det = explorer.detections
inst = tr.outputs[0]["instances"]
scores, classes = inst.scores.numpy(), inst.pred_classes.numpy()
names = metadata.thing_classes

det.set(score_thresh=0.333)
assert det.state["score_thresh"] == 0.33
try:
    det.set(score_thresh=1.5)
except ValueError as e:
    print("ValueError:", e)
det.set(image=0, score_thresh=0.5, classes=[], detection=-1)
kept = det.last.drawn["kept"]
print("state:", det.state)
print(f"{len(kept)} of {len(inst)} detections above 0.5:",
      ", ".join(f"{names[classes[r]]} {scores[r]:.2f}" for r in kept))
assert len(kept) >= 1, "the embedded model should find a shape on this image"
assert sorted(kept.tolist()) == np.flatnonzero(scores > 0.5).tolist()
np.testing.assert_allclose(det.last.drawn["boxes"], inst.pred_boxes.tensor.numpy()[kept], atol=1e-4)
assert det.last.drawn["masks"] == len(kept) and len(det.last.drawn["labels"]) == len(kept)"""),
    md("""Lower the threshold step by step: each step draws every detection above it, and the picture
changes whenever that set does. Below the model's own test threshold (`SCORE_THRESH_TEST`) the
explorer re-filters the traced per-ROI scores once with `workbench.inspect.rethreshold` (what
the model would return with that threshold) and keeps that wider pool for later slider moves."""),
    code("""previous = None
for t in (0.9, 0.7, 0.5, 0.3, 0.1):
    det.set(score_thresh=t)
    n = len(det.last.drawn["boxes"])
    assert n == int((scores > t).sum()) and det.current is tr
    assert previous is None or n >= previous[0]
    assert previous is None or n == previous[0] or det.png != previous[1]
    print(f"score > {t:.1f}: {n} boxes")
    previous = (n, det.png)

low = round(det.base_settings[0] / 2, 2)  # on the slider's 0.01 step
det.set(score_thresh=low)
ref = wi.rethreshold(model, tr, score_thresh=low, nms_thresh=det.base_settings[1],
                     topk=det.base_settings[2]).outputs[0]["instances"]
np.testing.assert_allclose(det.last.drawn["boxes"], ref.pred_boxes.tensor.numpy(), atol=1e-4)
assert det.current is not tr and len(det.last.drawn["boxes"]) >= len(inst)
print(f"below the model's threshold ({det.base_settings[0]}): score > {low} matches rethreshold")"""),
    md("""The class filter keeps the chosen classes only; the toggles switch labels, masks and keypoints
off and on."""),
    code("""top = int(np.argmax(scores))
target = int(classes[top])
det.set(score_thresh=0.1, classes=[target])
kept = det.last.drawn["kept"]
print(f"class filter [{names[target]}]: {len(kept)} boxes, labels",
      [text for text, _ in det.last.drawn["labels"]])
assert len(kept) >= 1 and set(classes[kept].tolist()) == {target}
assert sorted(kept.tolist()) == np.flatnonzero((scores > 0.1) & (classes == target)).tolist()
assert all(text.startswith(names[target]) for text, _ in det.last.drawn["labels"])

with_all = det.png
det.set(show_labels=False, show_masks=False, show_keypoints=False)
assert det.last.drawn["labels"] == [] and det.last.drawn["masks"] == 0
assert len(det.last.drawn["keypoints"]) == 0 and det.png != with_all
det.set(show_labels=True, show_masks=True, show_keypoints=True, classes=[], score_thresh=0.5)
assert det.state["classes"] == [] and det.last.drawn["masks"] == len(det.last.drawn["kept"])
print("toggles off: no labels, masks or keypoints; back on:", det.last.drawn["masks"], "masks")"""),
    md("""## One detection's provenance

Choosing a detection (the `detection` dropdown lists those on the picture) outlines it in white
and shows where it came from: the proposal and its objectness, the anchor, FPN level and cell
the proposal was regressed from, the level the ROI was pooled from, and the top class scores;
beside it, the detection's crop."""),
    code("""det.set(detection=top)
d = det.provenance
print(d)
assert d.row == top and d.cls == int(classes[top]) and abs(d.score - float(scores[top])) < 1e-6
assert abs(float(d.probs[d.cls]) - d.score) < 1e-5  # the score is the class's softmax probability
assert d.level_name in tr.backbone.features and d.anchor_box.shape == (4,)
assert d.roi_index is not None and 0 <= d.roi_index < len(tr.proposals[0])
assert f"from proposal {d.roi_index}" in det.info.value and "top scores:" in det.info.value
assert det.last.drawn["highlight"] == top and det.crop.value[:4] == b"\\x89PNG"
assert len(det.last.drawn["boxes"]) == int((scores > 0.5).sum())  # the outline is not a detection
display(Image(det.png), Image(det.crop.value))"""),
    md("""A click on the picture does the same: it picks the shown detection whose box contains the
click (the one centred nearest, where boxes overlap); a click on no box clears the choice.
`click(x, y)` takes the picture's pixel, which here is the image's own pixel. The chosen detection
is the one the masks and keypoints tabs show, and their tab titles name its class."""),
    code("""x0, y0, x1, y1 = inst.pred_boxes.tensor[top].tolist()
picked = det.click((x0 + x1) / 2, (y0 + y1) / 2)
print("click at the centre of detection", top, "-> picked", picked)
assert picked == top and det.state["detection"] == top
assert explorer.masks.state["detection"] == explorer.keypoints.state["detection"] == top
print("tab titles:", [explorer.tab.get_title(k) for k in range(len(explorer.tabs))])
assert explorer.tab.get_title(3) == "masks: " + names[classes[top]]"""),
    md("""## Features: level, channel, views

The features tab shows one FPN level (a channel, or a reduction over channels), all levels, a
channel montage, PCA to RGB, activation histograms, or the ROIs each level received. The array
on the picture is the trace's tensor itself."""),
    code("""feat = explorer.features
for level, channel in (("p2", -1), ("p3", 5), ("p5", 17)):
    feat.set(view="level", level=level, channel=channel)
    shown = feat.last.drawn["arrays"][level]
    f = tr.backbone.features[level][0]
    if channel < 0:  # the mean over channels (numpy's summation order: equal to float32 rounding)
        np.testing.assert_allclose(shown, f.mean(0).numpy(), rtol=0, atol=1e-5)
    else:  # one channel: the trace's tensor itself
        np.testing.assert_array_equal(shown, f[channel].numpy())
    print(f"{level} channel {channel if channel >= 0 else 'mean'}: array {tuple(shown.shape)}")

feat.set(source="bottom_up", level="res4", channel=3)
np.testing.assert_array_equal(feat.last.drawn["arrays"]["res4"], tr.backbone.bottom_up["res4"][0, 3].numpy())
feat.set(source="features", level="p3", view="level", cell_y=10, cell_x=12)  # as a click on that cell
vec = feat.last.drawn["vector"]
np.testing.assert_array_equal(vec, tr.backbone.features["p3"][0, :, 10, 12].numpy())
print(f"p3 cell (10, 12): a {len(vec)}-channel vector, shown beside the map")
display(Image(feat.png), Image(feat.vector.value))
feat.set(cell_y=-1, cell_x=-1)
feat.set(source="features", level="p3", channel=-1)
pngs = {}
for view in feat.VIEWS:
    feat.set(view=view)
    pngs[view] = feat.png
assert len(set(pngs.values())) == len(feat.VIEWS)  # six different pictures
per_level = feat.last.drawn["counts"]  # the "rois" view: how many ROIs each level pooled
print("ROIs per level:", per_level)
assert sum(per_level.values()) == len(tr.proposals[0])
feat.set(view="pca", level="p2")
display(Image(feat.png))"""),
    md("""## Proposals and anchors

The proposals tab draws the RPN's top-k proposals coloured by objectness (the colour bar beside
it is the key), and optionally the anchors of one cell of one level. The cell sliders' ranges
follow the chosen level's grid; a click on the picture picks the cell whose anchors are centred
nearest the click and shows them."""),
    code("""prop = explorer.proposals
props = tr.rpn.proposals[0]
prop.set(topk=20, show_anchors=False)
scale = 1 / float(np.mean(tr.preprocess.scales[0]))
top20 = props.objectness_logits.argsort(descending=True)[:20]
np.testing.assert_allclose(np.sort(prop.last.drawn["proposals"], axis=0),
                           np.sort(props.proposal_boxes.tensor[top20].numpy() * scale, axis=0), rtol=1e-5)
prop.set(show_anchors=True, level="p4", cell_y=4, cell_x=6)
print(f"{len(prop.last.drawn['proposals'])} of {len(props)} proposals;",
      f"{len(prop.last.drawn['anchors'])} anchor(s) at {prop.last.drawn['cell']}")
assert len(prop.last.drawn["proposals"]) == 20 and len(prop.last.drawn["anchors"]) >= 1
h4, w4 = tr.backbone.features["p4"].shape[-2:]
assert (prop.controls["cell_y"].max, prop.controls["cell_x"].max) == (h4 - 1, w4 - 1)
level, cy, cx = prop.click(*inst.pred_boxes.tensor[top].reshape(2, 2).mean(0).tolist())
print(f"p4 is {h4}x{w4} cells; a click on detection {top}'s centre picks cell {(cy, cx)}")
assert level == "p4" and prop.last.drawn["cell"] == ("p4", cy, cx)
display(Image(prop.png), Image(prop.legend.value))"""),
    md("""## Masks and keypoints of one detection

The masks tab shows a detection's raw 28x28 mask logits (of its class) beside the mask pasted
into the image; the keypoints tab its keypoint heatmaps over the crop."""),
    code("""mx = explorer.masks
mx.set(image=0, detection=top)
d = tr.detection(top, image=0)
np.testing.assert_array_equal(mx.last.drawn["logits"], d.mask_logits[d.cls].numpy())
print("mask logits", tuple(mx.last.drawn["logits"].shape), "of class", names[d.cls])
assert mx.last.drawn["colorbars"]  # logits and probabilities each carry a colour bar
display(Image(mx.png))

kx = explorer.keypoints
kx.set(image=0, detection=top, keypoints=[])
np.testing.assert_array_equal(kx.last.drawn["heatmaps"], d.keypoint_heatmap.numpy())
all_png = kx.png
center = metadata.keypoint_names.index("center")
kx.set(keypoints=[center])
np.testing.assert_array_equal(kx.last.drawn["heatmaps"], d.keypoint_heatmap[[center]].numpy())
assert kx.png != all_png
print("keypoint heatmaps", tuple(d.keypoint_heatmap.shape), "->", tuple(kx.last.drawn["heatmaps"].shape),
      "for", metadata.keypoint_names[center])
display(Image(kx.png))"""),
    md("""## Panoptic and semantic segmentation

The segmentation tab overlays the panoptic output (things and stuff segments) or the semantic
head's argmax."""),
    code("""seg = explorer.segmentation
seg.set(kind="panoptic", alpha=0.6, show_labels=True)
pan, info = tr.outputs[0]["panoptic_seg"]
present = set(np.unique(pan.numpy()).tolist())
drawn_ids = sorted(s["id"] for s in seg.last.drawn["segments"])
assert drawn_ids == sorted(s["id"] for s in info if s["id"] in present)
print("panoptic segments:", sorted(("thing" if s["isthing"] else "stuff") for s in info if s["id"] in present))
panoptic_png = seg.png
seg.set(kind="semantic")
want = sorted(np.unique(tr.outputs[0]["sem_seg"].argmax(0).numpy()).tolist())
assert sorted(s["category_id"] for s in seg.last.drawn["segments"]) == want and seg.png != panoptic_png
print("semantic classes:", [metadata.stuff_classes[c] for c in want])
display(Image(seg.png))"""),
    md("""## One image selector for all tabs

Moving the image slider above the tabs sets every tab to that image: it is every tab's `image`
control, so `det.set(image=1)` moves it as well. Only the tab on screen redraws at once; the
others redraw when they are shown."""),
    code("""renders = {k: ex.renders for k, ex in explorer.tabs.items()}
explorer.select("detections")
det.set(image=1)
assert explorer.image.value == 1 and all(ex.state["image"] == 1 for ex in explorer.tabs.values())
print("redraws:", {k: ex.renders - renders[k] for k, ex in explorer.tabs.items()})
assert det.renders == renders["detections"] + 1
det.set(score_thresh=0.5)
s1 = tr.outputs[1]["instances"].scores.numpy()
assert len(det.last.drawn["boxes"]) == int((s1 > 0.5).sum())
print(f"image 1: {len(det.last.drawn['boxes'])} detections above 0.5")
hook.remove()
print("backbone runs while exploring:", len(backbone_calls))
assert backbone_calls == []  # everything above came from the cached trace (rethreshold included)"""),
    md("""A single explorer can also be shown on its own, e.g. the detections with their provenance
panel:"""),
    widget_display("""det.set(image=0, detection=top)
det"""),
    code("""assert det.state["image"] == 0 and det.state["detection"] == top and det.image.value == det.png
print("shown:", det.state)"""),
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_build import write_executed  # noqa: E402

write_executed(cells, "05_explorer.ipynb", drop_widget_state=True)
