"""Write notebooks/08_error_analysis.ipynb from its cells and execute it in place.

Run from the repo root: .venv/bin/python tools/make_notebook_08.py
"""
import sys
from pathlib import Path

import nbformat

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell

cells = [
    md("""# 08 · Where the model goes wrong: error analysis over a dataset

One evaluation of the embedded Shapes model, then everything read from it, with no second model
run: per-image results (which detection took which object), a TIDE-style breakdown of the errors
with the AP each kind costs, a confusion matrix with a background row and column, per-class
precision-recall curves and score thresholds, and the worst images, each traced through the pass
that was scored and tied to the model's stages (`workbench.analysis`)."""),
    code("""import io
import tempfile

import numpy as np
import torch
from IPython.display import Image, display

from workbench import analysis as wa, model_zoo
from workbench.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from workbench.data.datasets.shapes import register_shapes
from workbench.engine import DefaultPredictor
from workbench.evaluation import COCOEvaluator, inference_on_dataset
from workbench.utils.logger import setup_logger

torch.set_num_threads(2)  # the stored outputs were made with 2 threads (see the README)
setup_logger(name="workbench", output=None).setLevel("ERROR")  # keep the cells' output short

NAME = "shapes_val_first40"
if NAME not in DatasetCatalog.list():
    register_shapes(NAME, "val", 40, 0)          # the first 40 validation images
cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
cfg.MODEL.DEVICE = "cpu"
predictor = DefaultPredictor(cfg)
names = MetadataCatalog.get(NAME).thing_classes
K = len(names)

evaluator = COCOEvaluator(NAME, tasks=("bbox", "segm"), distributed=False, output_dir=tempfile.mkdtemp())
results = inference_on_dataset(predictor.model, build_detection_test_loader(cfg, NAME), evaluator,
                               progress=False)
print(f"{len(DatasetCatalog.get(NAME))} images, classes {names}")
print(f"box AP {results['bbox']['AP']:.1f}, AP50 {results['bbox']['AP50']:.1f}; "
      f"mask AP {results['segm']['AP']:.1f}, AP50 {results['segm']['AP50']:.1f}")
assert results["bbox"]["AP50"] > 70 and results["segm"]["AP50"] > 70


def show(picture, scale=1.0):
    display(Image(picture.to_png_bytes()))"""),
    md("""## Per-image results

`evaluator.per_image(task, iou_thresh)` reads pycocotools' own matching back: for each image, the
evaluated detections with their score, class, the object they matched and its IoU, and for each
object the detection that took it."""),
    code("""per_image = evaluator.per_image("bbox", iou_thresh=0.5)
first = next(iter(per_image.values()))
print(first)
print("tp:", first.tp.astype(int).tolist())
print("IoU of the true positives:", np.round(first.iou[first.tp], 2).tolist())
n_obj = sum(int((~r.gt_ignored).sum()) for r in per_image.values())
n_tp = sum(int(r.tp.sum()) for r in per_image.values())
print(f"over the {len(per_image)} images: {n_tp} of {n_obj} objects found at IoU 0.5")
assert len(per_image) == 40 and all((r.iou[r.tp] >= 0.5).all() for r in per_image.values())"""),
    md("""## What kind of errors, and what they cost

Every detection that is not a true positive gets one TIDE type, from its IoU with the image's
objects: `cls` (right place, wrong class), `loc` (right class, loose box), `both`, `duplicate`,
`bkg` (nothing there); an object nobody found is a `miss`. dAP is the AP gained if an oracle fixed
every error of that type; `FP` and `FN` fix all false positives / all misses. With nothing fixed
the AP is the evaluator's AP50; with everything fixed it is 100."""),
    code("""boxes = evaluator.error_breakdown("bbox")
masks = evaluator.error_breakdown("segm")
print("boxes:", boxes.summary(), sep="\\n")
print("masks:", masks.summary(), sep="\\n")
for b, task in ((boxes, "bbox"), (masks, "segm")):
    assert abs(b.ap - results[task]["AP50"]) < 1e-6
    assert abs(b.ap_if_fixed(*wa.ERROR_TYPES) - 100.0) < 1e-6
worst_type = max(wa.ERROR_TYPES, key=lambda k: boxes.dap[k])
print(f"the costliest error type for boxes: {worst_type} ({boxes.dap[worst_type]:.1f} AP)")
show(boxes.plot())"""),
    md("""Per class: the AP and the dAP of the costliest error type."""),
    code("""for c in range(K):
    dap = boxes.per_class_dap[c]
    t = max(wa.ERROR_TYPES, key=lambda k: dap[k])
    print(f"  {names[c]:9s} AP50 {boxes.per_class_ap[c]:5.1f}   costliest: {t} ({dap[t]:.1f})")
assert all(0 <= boxes.per_class_ap[c] <= 100 for c in range(K))"""),
    md("""## Confusion matrix

Row = true class, column = predicted class, at IoU 0.5 and score >= 0.5; the last row holds
detections on no object of their class's own, the last column the objects nobody found. Each
object is counted once in its row, so rows sum to the object counts."""),
    code("""cm = wa.confusion_matrix(per_image, K, score_thresh=0.5, class_names=names)
print(cm)
counts = np.bincount(np.concatenate([r.gt_categories[~r.gt_ignored] for r in per_image.values()]), minlength=K)
assert cm.counts[:K].sum(axis=1).tolist() == counts.tolist()
off = cm.counts[:K, :K] - np.diag(np.diag(cm.counts[:K, :K]))
i, j = np.unravel_index(off.argmax(), off.shape)
print(f"most frequent confusion: {names[i]} called {names[j]} ({off[i, j]} times)")
show(cm.plot())"""),
    md("""## Precision-recall per class, and the score threshold to use

The threshold that maximises F1 differs from class to class; the default 0.5 is not always it."""),
    code("""curves = wa.pr_curves(per_image, K, names)
for c in curves:
    print(f"  {c.class_name:9s} {c.num_gt:3d} objects  AP50 {c.ap:5.1f}  best F1 {c.best_f1:.2f} at score >= {c.best_f1_score:.2f}")
assert all(abs(c.ap - boxes.per_class_ap[c.cls]) < 1e-6 for c in curves)"""),
    md("""## The worst images, explained

`rank_images` orders the images by their errors. `explain_image` traces one through the pass the
evaluator scored (`wi.trace(predictor, dataset_dict)`): every false positive is a row of the
trace's outputs, with its provenance (proposal, anchor, class scores before NMS) and its match
to the ground truth; every miss gets `why_missed`."""),
    code("""ranked = wa.rank_images(per_image, boxes)
for s in ranked[:3]:
    print(f"image {s.image_id}: {s.num_fp} false positives, {s.num_missed} missed, AP50 {s.ap:.1f}, {s.errors}")
ex = wa.explain_image(evaluator, predictor, ranked[0].image_id, breakdown=boxes)
print(ex)
kind, det = ex.false_positives[0]
print(det)
for _, why in ex.misses[:2]:
    print(why)
assert len(ex.false_positives) == ranked[0].num_fp and len(ex.misses) == ranked[0].num_missed
assert all(d.roi_index is not None and d.match is not None for _, d in ex.false_positives)"""),
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_build import write_executed  # noqa: E402

write_executed(cells, "08_error_analysis.ipynb")
