"""Write notebooks/01_quickstart.ipynb from its cells and execute it in place.

Run from the repo root: .venv/bin/python tools/make_notebook_01.py
(re-run it whenever the embedded weights change: the stored outputs depend on them).
"""
import sys
from pathlib import Path

import nbformat

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell

cells = [
    md("""# 01 · Quickstart

From a model-zoo name to a drawn prediction in a few lines: get a config, build the model, load
its weights, run `DefaultPredictor` on an image and draw what it found.

The model used throughout these notebooks is workbench's *embedded* model: a small Panoptic FPN
with mask and keypoint heads, trained from scratch on the procedural shapes dataset. Its weights
ship inside the package, so nothing is downloaded. One forward pass gives boxes, classes, masks,
keypoints, a semantic segmentation and a panoptic segmentation."""),
    code("""import os
import random

import numpy as np
import torch
from IPython.display import Image, display

import workbench
from workbench import model_zoo
from workbench.checkpoint import DetectionCheckpointer
from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.detection_utils import read_image
from workbench.engine import DefaultPredictor
from workbench.modeling import build_model
from workbench.vis import Visualizer, encode_png, match_by_iou

# Two threads and fixed seeds: float sums then come out the same on every run, so the numbers
# printed below are stable for a given weight file.
torch.set_num_threads(2)
torch.manual_seed(0)
np.random.seed(0)
random.seed(0)

NAME = "Shapes/panoptic_kp_R_50_FPN_small.yaml"


def show(*pictures, gap=8):
    \"\"\"Display (H, W, 3) uint8 RGB arrays or VisImages side by side, as one PNG.\"\"\"
    arrays = [p.get_image() if hasattr(p, "get_image") else p for p in pictures]
    height = max(a.shape[0] for a in arrays)
    padded = [np.pad(a, ((0, height - a.shape[0]), (0, gap), (0, 0)), constant_values=255) for a in arrays]
    display(Image(data=encode_png(np.concatenate(padded, axis=1)[:, :-gap])))"""),
    md("""## A config from the model zoo

`model_zoo.get_config` reads a shipped YAML file on top of the defaults. With `trained=True`,
`MODEL.WEIGHTS` points at the trained weights: a detectron2 URL for the COCO models, the packaged
file for the `Shapes/` model."""),
    code("""cfg = model_zoo.get_config(NAME, trained=True)
weights = os.path.relpath(cfg.MODEL.WEIGHTS, os.path.dirname(workbench.__file__))
print("architecture:", cfg.MODEL.META_ARCHITECTURE)
print("weights:     ", weights)
print("classes:     ", cfg.MODEL.ROI_HEADS.NUM_CLASSES, "things,", cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1, "stuff")
assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN" and cfg.MODEL.DEVICE == "cpu"
assert weights == "model_zoo/weights/Shapes/panoptic_kp_R_50_FPN_small.pth"
assert (cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (7, 4)"""),
    md("""## Build, then load the weights

`build_model` only builds the structure, with random parameters. `DetectionCheckpointer` fills
them from a file and records what did not fit in `incompatible_keys`: nothing, here."""),
    code("""model = build_model(cfg)
checkpointer = DetectionCheckpointer(model)
checkpointer.load(cfg.MODEL.WEIGHTS)
report = checkpointer.incompatible_keys
print(type(model).__name__, "with", len(model.state_dict()), "tensors")
print("missing:", report.missing_keys, " unexpected:", report.unexpected_keys,
      " wrong shape:", report.incorrect_shapes)
assert not report.missing_keys and not report.unexpected_keys and not report.incorrect_shapes
saved = torch.load(cfg.MODEL.WEIGHTS, map_location="cpu", weights_only=True)["model"]
assert len(saved) == len(model.state_dict())
assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())"""),
    md("""`model_zoo.get` does the same three steps in one call. Like `build_model`, it returns the
model in training mode: call `.eval()` before inference."""),
    code("""zoo_model = model_zoo.get(NAME, trained=True)
same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), zoo_model.state_dict().values()))
print("training mode:", zoo_model.training, "| same weights as above:", same)
assert zoo_model.training and same"""),
    md("""## A validation image

The shapes dataset is procedural: every image is drawn from a seed, with its full ground truth
(boxes, polygons, keypoints, semantic and panoptic labels). `DatasetCatalog.get` returns
detectron2 dataset dicts (the 100 images are drawn and cached on first use);
`MetadataCatalog` holds the class names and colours the visualizer uses."""),
    code("""dicts = DatasetCatalog.get("shapes_val_100")
metadata = MetadataCatalog.get("shapes_val")
record = dicts[0]
image_bgr = read_image(record["file_name"], format="BGR")  # what cv2.imread would give
image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
gt_classes = [metadata.thing_classes[a["category_id"]] for a in record["annotations"]]
print(len(dicts), "images; image 0 is", image_bgr.shape, "with", len(gt_classes), "shapes:", ", ".join(gt_classes))
assert len(dicts) == 100 and image_bgr.shape == (record["height"], record["width"], 3)
assert image_bgr.dtype == np.uint8 and len(gt_classes) == 7
show(Visualizer(image_rgb, metadata).draw_dataset_dict(record))"""),
    md("""## DefaultPredictor

`DefaultPredictor(cfg)` builds the model, loads `cfg.MODEL.WEIGHTS` and switches to eval mode.
Called on one (H, W, 3) uint8 image in **BGR** order, it converts it to `cfg.INPUT.FORMAT`,
resizes it as the config says, runs the model without gradients and returns outputs in the
original image's pixels."""),
    code("""predictor = DefaultPredictor(cfg)
outputs = predictor(image_bgr)
instances = outputs["instances"]
confident = instances[instances.scores > 0.5]
print("outputs:", sorted(outputs))
print(len(instances), "detections,", len(confident), "with score > 0.5:")
for cls, score in zip(confident.pred_classes.tolist(), confident.scores.tolist()):
    print(f"  {metadata.thing_classes[cls]:9s} {score:.2f}")
assert sorted(outputs) == ["instances", "panoptic_seg", "sem_seg"]
assert instances.image_size == image_bgr.shape[:2]
assert len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE  # at most 100 kept per image
assert len(confident) >= 1 and bool((confident.scores > 0.5).all())
assert confident.scores.tolist() == sorted(confident.scores.tolist(), reverse=True)"""),
    md("""How many of the ground-truth shapes did the confident detections find? Match each
detection to an unmatched shape of the same class with box IoU ≥ 0.5."""),
    code("""gt_boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in record["annotations"])])
matches = match_by_iou(gt_boxes, confident.pred_boxes.tensor.numpy(), confident.scores.numpy(),
                       [a["category_id"] for a in record["annotations"]], confident.pred_classes.numpy())
print(f"{len(matches)} of {len(gt_boxes)} shapes found")
assert 1 <= len(matches) <= min(len(gt_boxes), len(confident))"""),
    md("""## Drawing the result

`Visualizer` draws on a copy of an RGB image: `draw_instance_predictions` gives boxes, labels,
masks and keypoints; `draw_panoptic_seg` colours every segment of the panoptic output."""),
    code("""panoptic, segments = outputs["panoptic_seg"]
left = Visualizer(image_rgb, metadata).draw_instance_predictions(instances, score_thresh=0.5)
right = Visualizer(image_rgb, metadata).draw_panoptic_seg(panoptic, segments)
print("drawn:", len(left.drawn["kept"]), "instances,", len(right.drawn["segments"]), "panoptic segments")
assert len(left.drawn["kept"]) == len(confident)
assert len(right.drawn["segments"]) == len([s for s in segments if (panoptic == s["id"]).any()])
show(left, right)"""),
    md("""## A photograph

workbench ships a few photographs (`workbench.assets`). The embedded model has only ever seen
coloured shapes on sky, ground and water, so on a photo it shows how a detector behaves far
from its training data: few confident detections, and a semantic map that still calls every
pixel sky, ground, water or "things". The code is the same as for the validation image."""),
    code("""from workbench.assets import photo_path

photo_bgr = read_image(photo_path("coffee"), format="BGR")
photo_out = predictor(photo_bgr)
photo_instances = photo_out["instances"]
print("photo:", photo_bgr.shape[:2], "| instances:", photo_instances.image_size,
      "| sem_seg:", tuple(photo_out["sem_seg"].shape))
assert photo_instances.image_size == photo_bgr.shape[:2] == (400, 600)
assert photo_out["sem_seg"].shape == (4, 400, 600)
photo_rgb = np.ascontiguousarray(photo_bgr[:, :, ::-1])
show(Visualizer(photo_rgb, metadata).draw_instance_predictions(photo_instances, score_thresh=0.5),
     Visualizer(photo_rgb, metadata).draw_sem_seg(photo_out["sem_seg"]))"""),
    md("""Next: [02 · Model inputs and outputs](02_inputs_and_outputs.ipynb) takes the model's
input and output dicts apart, field by field."""),
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_build import write_executed  # noqa: E402

write_executed(cells, "01_quickstart.ipynb")
