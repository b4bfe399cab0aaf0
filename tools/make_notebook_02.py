"""Write notebooks/02_inputs_and_outputs.ipynb from its cells and execute it in place.

Run from the repo root: .venv/bin/python tools/make_notebook_02.py
(re-run it whenever the embedded weights change: the stored outputs depend on them).
"""
import sys
from pathlib import Path

import nbformat

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell

cells = [
    md("""# 02 · Model inputs and outputs

Every built-in model takes a `list[dict]`, one dict per image, and returns either a dict of
losses (training) or a `list[dict]` of predictions (inference). This notebook fills in each key
of those dicts with real tensors from the embedded Panoptic FPN, which produces every output
kind: `instances` (boxes, classes, masks, keypoints), `sem_seg` and `panoptic_seg`, plus
`proposals` from a `ProposalNetwork` built on the same weights."""),
    code("""import copy
import random
from collections import Counter

import numpy as np
import torch
from IPython.display import Image, display
from PIL import Image as PILImage

from workbench import model_zoo
from workbench.checkpoint import DetectionCheckpointer
from workbench.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from workbench.data import transforms as T
from workbench.data.detection_utils import read_image
from workbench.modeling import build_model
from workbench.structures import Boxes, Instances, Keypoints, PolygonMasks
from workbench.utils.events import EventStorage
from workbench.vis import Visualizer

# Two threads and fixed seeds: float sums and the training-time sampling then come out the same
# on every run, so the numbers printed below are stable for a given weight file.
torch.set_num_threads(2)
torch.manual_seed(0)
np.random.seed(0)
random.seed(0)

NAME = "Shapes/panoptic_kp_R_50_FPN_small.yaml"
cfg = model_zoo.get_config(NAME, trained=True)
model = model_zoo.get(NAME, trained=True).eval()
metadata = MetadataCatalog.get("shapes_val")
records = DatasetCatalog.get("shapes_val_100")
record = records[0]
image_rgb = read_image(record["file_name"], format="RGB")  # (H, W, 3) uint8
H, W = image_rgb.shape[:2]
print(f"{type(model).__name__}; validation image 0 is {H} x {W}")
assert (H, W) == (record["height"], record["width"]) == (384, 352)"""),
    md("""## The input: a list of dicts

For inference only `"image"` is required: a `(C, H, W)` tensor with values in 0-255, its
channels in the order `cfg.INPUT.FORMAT` names. Normalisation happens inside the model, with
`cfg.MODEL.PIXEL_MEAN` and `PIXEL_STD`."""),
    code("""image = torch.as_tensor(image_rgb.transpose(2, 0, 1).copy())  # (H, W, 3) -> (3, H, W)
with torch.no_grad():
    outputs = model([{"image": image}])
print(f"{cfg.INPUT.FORMAT} image {tuple(image.shape)} {image.dtype} -> {len(outputs)} dict with {sorted(outputs[0])}")
mean, std = model.pixel_mean.flatten(), model.pixel_std.flatten()  # (3, 1, 1) buffers
print("normalised with mean", [round(v, 3) for v in mean.tolist()], "and std", [round(v, 3) for v in std.tolist()])
assert cfg.INPUT.FORMAT == "RGB" and image.shape == (3, 384, 352) and image.dtype == torch.uint8
assert len(outputs) == 1 and sorted(outputs[0]) == ["instances", "panoptic_seg", "sem_seg"]
assert torch.allclose(mean, torch.tensor(cfg.MODEL.PIXEL_MEAN)) and torch.allclose(std, torch.tensor(cfg.MODEL.PIXEL_STD))"""),
    md("""Images of different sizes go in one batch: the model pads them to a common size that the
backbone's strides divide (`backbone.size_divisibility`), and each output comes back at its own
image's size."""),
    code("""second = torch.as_tensor(read_image(records[1]["file_name"], format="RGB").transpose(2, 0, 1).copy())
batch = [{"image": image}, {"image": second}]
padded = model.preprocess_image(batch)  # what the backbone sees: normalised, padded, stacked
with torch.no_grad():
    batch_outputs = model(batch)
print("images:", [tuple(x["image"].shape[1:]) for x in batch], "-> padded batch", tuple(padded.tensor.shape),
      "(divisible by", str(model.backbone.size_divisibility) + ")")
print("outputs:", [o["instances"].image_size for o in batch_outputs])
assert padded.tensor.shape == (2, 3, 384, 352) and model.backbone.size_divisibility == 32
assert [o["instances"].image_size for o in batch_outputs] == [(384, 352), (320, 320)]"""),
    md("""## Training inputs: `instances` and `sem_seg`

Training needs the ground truth in each dict: `"instances"` (an `Instances` with `gt_boxes`,
`gt_classes`, `gt_masks`, `gt_keypoints`) and, for the semantic branch, `"sem_seg"` (an
`(H, W)` tensor of class ids). `DatasetMapper` builds these from a dataset dict. Its training
augmentations are random (scale jitter, flips); here one fixed resize keeps the notebook
reproducible.

Note `height` / `width`: they keep the *original* size (384 x 352) while `image` is the resized
one. They are the size the outputs should have, not the size of the image."""),
    code("""mapper = DatasetMapper(cfg, is_train=True, augmentations=[T.ResizeShortestEdge(320, 448)])
train_inputs = [mapper(record)]  # a batch of one image
x = train_inputs[0]
gt = x["instances"]
print("image", tuple(x["image"].shape), "| height, width", (x["height"], x["width"]))
print(gt)
print("sem_seg", tuple(x["sem_seg"].shape), x["sem_seg"].dtype, "values", x["sem_seg"].unique().tolist(),
      "->", [metadata.stuff_classes[v] for v in x["sem_seg"].unique().tolist()])
assert x["image"].shape == (3, 349, 320) and (x["height"], x["width"]) == (384, 352)
assert gt.image_size == (349, 320) and len(gt) == len(record["annotations"]) == 7
assert isinstance(gt.gt_boxes, Boxes) and isinstance(gt.gt_masks, PolygonMasks)
assert isinstance(gt.gt_keypoints, Keypoints) and gt.gt_keypoints.tensor.shape == (7, 5, 3)
assert gt.gt_classes.dtype == torch.int64 and bool(((gt.gt_classes >= 0) & (gt.gt_classes < 7)).all())
assert x["sem_seg"].shape == (349, 320) and x["sem_seg"].dtype == torch.int64
assert x["sem_seg"].unique().tolist() == [0, 1, 2]"""),
    md("""## Training: a dict of losses, under `EventStorage`

In training mode the model returns a `dict[str, scalar tensor]` of losses, and it must run
inside an `EventStorage`, where it records training statistics. We train a copy: a forward
pass in training mode also updates the BatchNorm running statistics, which would change the
predictions of `model` below."""),
    code("""trainee = copy.deepcopy(model).train()
try:
    trainee(train_inputs)
    raise AssertionError("a model in training mode should refuse to run without an EventStorage")
except RuntimeError as err:
    print("without EventStorage:", str(err).split(". ")[0] + ".")
with EventStorage() as storage:
    losses = trainee(train_inputs)
print("losses:", sorted(losses))
print("also recorded:", sorted(storage.histories()))
assert set(losses) == {"loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
                       "loss_mask", "loss_keypoint"}
assert all(v.ndim == 0 and v.dtype == torch.float32 and bool(torch.isfinite(v)) for v in losses.values())
assert {"rpn/num_pos_anchors", "fast_rcnn/cls_accuracy", "mask_rcnn/accuracy"} <= set(storage.histories())
assert all(v.requires_grad for v in losses.values())  # sum(losses.values()).backward() gives the gradients"""),
    md("""## Output: `instances`

At inference the model returns one dict per image. `"instances"` holds the detections (at
most `cfg.TEST.DETECTIONS_PER_IMAGE`, sorted by score), each field a tensor with one row per
detection:

* `pred_boxes`: `Boxes`, XYXY in output pixels; `scores` and `pred_classes` (in `[0, 7)`);
* `pred_masks`: one boolean mask per detection, pasted at the full output size;
* `pred_keypoints`: `(x, y, score)` per keypoint, the score detectron2's spatial softmax of the keypoint logits (normalised on the 56 x 56 map, so a sharp heatmap can score above 1);
* `pred_keypoint_heatmaps`: the keypoint logits each point was decoded from, on a 56 x 56 grid
  over the box."""),
    code("""inst = outputs[0]["instances"]
n = len(inst)
for name, value in inst.get_fields().items():
    t = value.tensor if isinstance(value, Boxes) else value
    print(f"{name:24s} {type(value).__name__:6s} {str(tuple(t.shape)):18s} {t.dtype}")
assert 1 <= n <= cfg.TEST.DETECTIONS_PER_IMAGE and inst.image_size == (H, W)
assert list(inst.get_fields()) == ["pred_boxes", "scores", "pred_classes", "pred_masks", "pred_keypoints",
                                   "pred_keypoint_heatmaps"]
assert inst.pred_boxes.tensor.shape == (n, 4) and inst.pred_boxes.tensor.dtype == torch.float32
assert inst.scores.shape == (n,) and inst.scores.dtype == torch.float32
assert inst.scores.tolist() == sorted(inst.scores.tolist(), reverse=True) and float(inst.scores[0]) > 0.5
assert inst.pred_classes.dtype == torch.int64 and bool(((inst.pred_classes >= 0) & (inst.pred_classes < 7)).all())
assert inst.pred_masks.shape == (n, H, W) and inst.pred_masks.dtype == torch.bool
assert inst.pred_keypoints.shape == (n, 5, 3) and inst.pred_keypoints.dtype == torch.float32
assert inst.pred_keypoint_heatmaps.shape == (n, 5, 56, 56)"""),
    md("""The keypoints of the best detection, by name. Each point is decoded inside its box."""),
    code("""top = inst[0]
x0, y0, x1, y1 = top.pred_boxes.tensor[0].tolist()
print(f"{metadata.thing_classes[int(top.pred_classes)]} {float(top.scores):.2f}, box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f})")
for name, (x, y, s) in zip(metadata.keypoint_names, top.pred_keypoints[0].tolist()):
    print(f"  {name:6s} ({x:6.1f}, {y:6.1f})  score {s:.2f}")
kp = top.pred_keypoints[0]
tol = 1.0  # boxes are clipped to the image, keypoints are not
assert bool(((kp[:, 0] >= x0 - tol) & (kp[:, 0] <= x1 + tol) & (kp[:, 1] >= y0 - tol) & (kp[:, 1] <= y1 + tol)).all())
# The score is detectron2's: exp(0) over the sum of exp(logit - max) on the 56 x 56 map, with the
# max taken on the box-sized bicubic upsampling, which can overshoot the map's own peak: a sharp
# heatmap scores above 1.
assert bool((kp[:, 2] > 0).all())"""),
    md("""## Output: `sem_seg`

`"sem_seg"` is a `(C, H, W)` float tensor of per-class logits at the output size, for the
semantic head's classes: class 0 is "things" (any shape), the others are the stuff classes.
Its argmax is a label map, comparable with the dataset's ground-truth label image."""),
    code("""sem = outputs[0]["sem_seg"]
labels = sem.argmax(dim=0)  # (C, H, W) -> (H, W)
gt_labels = torch.as_tensor(np.array(PILImage.open(record["sem_seg_file_name"])), dtype=torch.int64)
accuracy = (labels == gt_labels).float().mean().item()
print("sem_seg", tuple(sem.shape), sem.dtype, "| classes:", metadata.stuff_classes)
print(f"pixel accuracy against the ground truth: {accuracy:.2f}")
assert sem.shape == (4, H, W) and sem.dtype == torch.float32 and len(metadata.stuff_classes) == 4
assert gt_labels.shape == (H, W) and accuracy > 0.5"""),
    md("""## Output: `panoptic_seg`

`"panoptic_seg"` is a pair: an `(H, W)` int32 map of segment ids (0 where no segment was
placed) and a list with one dict per segment. `id` is the value in the map, `isthing` tells
which class list `category_id` indexes; things also carry their `score` and the index of their
detection in `instances` (`instance_id`), stuff its `area`."""),
    code("""panoptic, segments = outputs[0]["panoptic_seg"]
print("panoptic_seg", tuple(panoptic.shape), panoptic.dtype, "|", len(segments), "segments:")
for s in segments:
    kind, names = ("thing", metadata.thing_classes) if s["isthing"] else ("stuff", metadata.stuff_classes)
    extra = f"score {s['score']:.2f}" if s["isthing"] else f"area {s['area']}"
    print(f"  id {s['id']}: {kind} {names[s['category_id']]:8s} {extra}")
print(f"unassigned (id 0): {(panoptic == 0).float().mean().item():.1%} of the pixels")
assert panoptic.shape == (H, W) and panoptic.dtype == torch.int32
assert set(panoptic.unique().tolist()) <= {0} | {s["id"] for s in segments}
for s in segments:
    if s["isthing"]:
        assert s["category_id"] == int(inst.pred_classes[s["instance_id"]])
        assert s["score"] >= cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH
    else:
        assert 1 <= s["category_id"] <= 3 and s["area"] == int((panoptic == s["id"]).sum())
assert 0.0 <= (panoptic == 0).float().mean().item() < 0.5"""),
    md("""## Output: `proposals`, from a `ProposalNetwork`

`META_ARCHITECTURE: "ProposalNetwork"` keeps only the backbone and the RPN. Built from the same
config, its parameter names are a subset of the Panoptic FPN's, so the embedded weights load
into it: the checkpointer reports nothing missing, and lists the ROI-head and semantic-head
tensors of the file as unexpected (unused)."""),
    code("""rpn_cfg = cfg.clone()
rpn_cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
rpn_model = build_model(rpn_cfg).eval()
checkpointer = DetectionCheckpointer(rpn_model)
checkpointer.load(rpn_cfg.MODEL.WEIGHTS)
report = checkpointer.incompatible_keys
unused = Counter(k.split(".")[0] for k in report.unexpected_keys)
print("missing:", report.missing_keys, "| wrong shape:", report.incorrect_shapes)
print("unexpected, per module:", dict(sorted(unused.items())))
saved = torch.load(rpn_cfg.MODEL.WEIGHTS, map_location="cpu", weights_only=True)["model"]
assert not report.missing_keys and not report.incorrect_shapes
assert unused == Counter(k.split(".")[0] for k in saved if k.startswith(("roi_heads.", "sem_seg_head.")))"""),
    md("""Its output is one dict per image with `"proposals"`: an `Instances` with `proposal_boxes`
and `objectness_logits` (logits, not probabilities), at most `RPN.POST_NMS_TOPK_TEST` of them,
most objectness first."""),
    code("""with torch.no_grad():
    proposals = rpn_model([{"image": image}])[0]["proposals"]
print(proposals)
logits = proposals.objectness_logits
print(f"{(logits > 0).sum().item()} of {len(proposals)} proposals have objectness > 0.5 (logit > 0)")
assert list(proposals.get_fields()) == ["proposal_boxes", "objectness_logits"]
assert 0 < len(proposals) <= cfg.MODEL.RPN.POST_NMS_TOPK_TEST == 200 and proposals.image_size == (H, W)
assert logits.tolist() == sorted(logits.tolist(), reverse=True) and (logits > 0).sum().item() >= 1
display(Image(data=Visualizer(image_rgb).draw_proposals(proposals, topk=20).to_png_bytes()))"""),
    md("""## Input: precomputed `proposals`

Fast R-CNN style models (`PROPOSAL_GENERATOR.NAME: "PrecomputedProposals"`) have no RPN and
read `"proposals"` from each input dict instead, in the pixels of that dict's `"image"`. Feed
them the ProposalNetwork's output and the ROI heads of the embedded weights reproduce the
Panoptic FPN's detections exactly: RPN, then ROI heads, in two models."""),
    code("""frcnn_cfg = cfg.clone()
frcnn_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
frcnn_cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
frcnn = build_model(frcnn_cfg).eval()
checkpointer = DetectionCheckpointer(frcnn)
checkpointer.load(frcnn_cfg.MODEL.WEIGHTS)
print("unused modules of the file:", sorted({k.split(".")[0] for k in checkpointer.incompatible_keys.unexpected_keys}))
with torch.no_grad():
    two_stage = frcnn([{"image": image, "proposals": proposals}])[0]["instances"]
same = (len(two_stage) == n and torch.equal(two_stage.pred_classes, inst.pred_classes)
        and torch.allclose(two_stage.pred_boxes.tensor, inst.pred_boxes.tensor, atol=1e-3)
        and torch.allclose(two_stage.scores, inst.scores, atol=1e-5))
print("same detections as the Panoptic FPN:", same)
assert not checkpointer.incompatible_keys.missing_keys and same"""),
    md("""## `height` and `width`: the output resolution

`"height"` / `"width"` in an input dict ask for outputs at that size, whatever the size of
`"image"`. Boxes and keypoints are scaled, masks are pasted directly at the requested size,
`sem_seg` and `panoptic_seg` are resized. `DefaultPredictor` relies on this: it resizes each
image for the network and asks for the original size back.

Here the same half-size image goes in twice, once with the original size requested."""),
    code("""half = torch.as_tensor(np.asarray(PILImage.fromarray(image_rgb).resize((W // 2, H // 2), PILImage.BILINEAR))
                       .transpose(2, 0, 1).copy())
with torch.no_grad():
    native, rescaled = model([{"image": half}, {"image": half, "height": H, "width": W}])
for key, out in (("no height/width", native), (f"height={H}, width={W}", rescaled)):
    i = out["instances"]
    print(f"{key:22s} instances {i.image_size}, pred_masks {tuple(i.pred_masks.shape[1:])}, "
          f"sem_seg {tuple(out['sem_seg'].shape)}, panoptic_seg {tuple(out['panoptic_seg'][0].shape)}")
a, b = native["instances"], rescaled["instances"]
assert half.shape == (3, H // 2, W // 2) and len(a) == len(b)
assert a.image_size == (H // 2, W // 2) and b.image_size == (H, W) and b.pred_masks.shape[1:] == (H, W)
assert native["sem_seg"].shape == (4, H // 2, W // 2) and rescaled["sem_seg"].shape == (4, H, W)
assert rescaled["panoptic_seg"][0].shape == (H, W)
assert torch.allclose(b.pred_boxes.tensor, a.pred_boxes.tensor * 2, atol=1e-3)
assert torch.allclose(b.pred_keypoints[..., :2], a.pred_keypoints[..., :2] * 2, atol=1e-3)"""),
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_build import write_executed  # noqa: E402

write_executed(cells, "02_inputs_and_outputs.ipynb")
