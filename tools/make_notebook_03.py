"""Write notebooks/03_step_through.ipynb from its cells and execute it in place.

Run from the repo root: .venv/bin/python tools/make_notebook_03.py
"""
import sys
from pathlib import Path

import nbformat

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell

cells = [
    md("""# 03 · Stepping through a detector

detectron2's "Use Models" tutorial offers *partial execution* for reaching the tensors inside a
model: call its parts one after the other instead of `model(inputs)`. This notebook runs that
snippet exactly as the tutorial prints it (both revisions) and checks that it gives what
`model(inputs)` gives. Then `workbench.inspect.trace` keeps every intermediate of one inference,
and we walk through them in the order of Matterport's `inspect_model` notebook: anchors, RPN
targets, top anchors, refinement, clipping, NMS, proposals, per-class refinement and NMS, masks,
keypoints.

The model is workbench's embedded one: a small Panoptic FPN with mask and keypoint heads trained
on the procedural shapes dataset. The image goes through the test-time transform the evaluator
and `DefaultPredictor` apply (its shorter side resized to `INPUT.MIN_SIZE_TEST`), so what we
step through is the pass that was scored. Pictures of the network's intermediates are drawn on
the network's input (`shown`, *input px*); the outputs are in the stored image's pixels
(`photo`, *original px*)."""),
    code("""import io

import numpy as np
import torch
from IPython.display import Image, display
from PIL import Image as PILImage

from workbench import inspect as wi, model_zoo, vis
from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.test_time import InferenceInputs
from workbench.modeling import detector_postprocess
from workbench.structures import Boxes, BoxMode, ImageList, Instances, pairwise_iou
from workbench.structures.masks import polygons_to_bitmask
from workbench.structures.mask_ops import paste_masks_in_image

torch.set_num_threads(2)  # the stored outputs were made with 2 threads (see the README)
torch.manual_seed(0)
np.random.seed(0)

cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
model = model_zoo.get("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True).eval()
metadata = MetadataCatalog.get("shapes_val")
val = DatasetCatalog.get("shapes_val_100")
to_input = InferenceInputs(cfg)  # the evaluator's and DefaultPredictor's test-time input


def load(record):
    \"\"\"A dataset dict -> the network's input picture ((h, w, 3) uint8 RGB, input px) and the
    model's input dict, as the evaluator makes it.\"\"\"
    inp = to_input(record)
    return inp["image"].permute(1, 2, 0).numpy().astype(np.uint8), inp


def gt_boxes_of(record, inp=None):
    \"\"\"Ground-truth boxes in original px, or in the input px of ``inp``.\"\"\"
    boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                for a in record["annotations"]], dtype=torch.float32))
    if inp is not None:
        boxes.scale(inp["image"].shape[2] / record["width"], inp["image"].shape[1] / record["height"])
    return boxes


def show(*pictures, scale=1.0):
    \"\"\"Display VisImage / PlotImage pictures side by side.\"\"\"
    arrays = [p.get_image() for p in pictures]
    h = max(a.shape[0] for a in arrays)
    arrays = [np.pad(a, ((0, h - a.shape[0]), (0, 6), (0, 0)), constant_values=255) for a in arrays]
    row = PILImage.fromarray(np.concatenate(arrays, axis=1))
    if scale != 1.0:
        row = row.resize((int(row.width * scale), int(row.height * scale)), PILImage.BILINEAR)
    png = io.BytesIO()
    row.quantize(256).save(png, format="PNG", optimize=True)  # 256 colours: a third of the size
    display(Image(png.getvalue()))


record = val[0]
photo = np.asarray(PILImage.open(record["file_name"]).convert("RGB"))   # original px
shown, inp = load(record)                                                  # input px
inputs = [inp]
gt_boxes = gt_boxes_of(record, inp)                  # input px, for anchors and proposals
gt_boxes_original = gt_boxes_of(record)
gt_classes = torch.tensor([a["category_id"] for a in record["annotations"]])
H, W = shown.shape[:2]
OH, OW = photo.shape[:2]
print(f"{type(model).__name__}; image {OW} x {OH} with {len(gt_boxes)} shapes:",
      [metadata.thing_classes[c] for c in gt_classes])
print(f"the network sees it at {W} x {H} (INPUT.MIN_SIZE_TEST = {cfg.INPUT.MIN_SIZE_TEST})")
assert (OW, OH, len(gt_boxes)) == (352, 384, 7) and (W, H) == (320, 349)
assert type(model).__name__ == "PanopticFPN"
"""),
    md("""## Partial execution, as the tutorial writes it

The newer revision of the tutorial. Its first line, `ImageList.from_tensors(...)  # preprocessed
input tensor`, leaves the preprocessing to the reader; here it is written out: subtract the
model's pixel mean, divide by its std, pad to the backbone's size divisibility. That is what
`model.preprocess_image` does."""),
    code("""with torch.no_grad():
    outputs = model(inputs)

    images = ImageList.from_tensors([(x["image"] - model.pixel_mean) / model.pixel_std for x in inputs],
                                    model.backbone.size_divisibility)  # preprocessed input tensor
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features)
    instances, _ = model.roi_heads(images, features, proposals)
    mask_features = [features[f] for f in model.roi_heads.in_features]
    mask_features = model.roi_heads.mask_pooler(mask_features, [x.pred_boxes for x in instances])

print("padded batch:", tuple(images.tensor.shape), "| proposals:", len(proposals[0]),
      "| detections:", len(instances[0]), "| mask features:", tuple(mask_features.shape[1:]))
assert torch.equal(images.tensor, model.preprocess_image(inputs).tensor)
assert tuple(images.tensor.shape) == (1, 3, 352, 320)  # 349 x 320 padded to a multiple of 32
assert len(proposals[0]) == model.proposal_generator.post_nms_topk[False] == 200
assert mask_features.shape == (len(instances[0]), 48, 14, 14)"""),
    md("""`roi_heads` returns detections at the network's input resolution with 28 x 28 mask
probabilities; `model(inputs)` then rescales them to `height` x `width` and pastes the masks
(`detector_postprocess`). Doing that step by hand gives the model's output exactly. The pooled
mask features fed to the mask head's layers give the same masks again."""),
    code("""def same_instances(a, b):
    \"\"\"Every field of two Instances is bit-identical.\"\"\"
    fa, fb = a.get_fields(), b.get_fields()
    if a.image_size != b.image_size or set(fa) != set(fb):
        return False
    as_tensor = lambda v: v.tensor if isinstance(v, Boxes) else v
    return all(torch.equal(as_tensor(fa[k]), as_tensor(fb[k])) for k in fa)


by_hand = detector_postprocess(instances[0], inputs[0]["height"], inputs[0]["width"])
print("fields:", sorted(by_hand.get_fields()))
assert same_instances(by_hand, outputs[0]["instances"])

with torch.no_grad():
    mask_logits = model.roi_heads.mask_head.layers(mask_features)        # (D, K, 28, 28)
cls = instances[0].pred_classes
assert torch.equal(mask_logits[torch.arange(len(cls)), cls][:, None].sigmoid(), instances[0].pred_masks)"""),
    md("""The older revision calls the box branch directly. `_forward_box` returns the detections
before the mask and keypoint heads, at the network's input resolution: the same boxes (once
rescaled to the original), scores and classes, and no masks."""),
    code("""with torch.no_grad():
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features)
    instances = model.roi_heads._forward_box(features, proposals)
    mask_features = [features[f] for f in model.roi_heads.in_features]
    mask_features = model.roi_heads.mask_pooler(mask_features, [x.pred_boxes for x in instances])

print("fields:", sorted(instances[0].get_fields()))
assert not instances[0].has("pred_masks")
assert mask_features.shape == (len(outputs[0]["instances"]), 48, 14, 14)
rescaled = detector_postprocess(instances[0], inputs[0]["height"], inputs[0]["width"])  # input -> original px
assert torch.equal(rescaled.pred_boxes.tensor, outputs[0]["instances"].pred_boxes.tensor)
assert torch.equal(rescaled.scores, outputs[0]["instances"].scores)
assert mask_features.shape == (len(outputs[0]["instances"]), 48, 14, 14)"""),
    md("""## The whole inference, kept: `wi.trace`

`wi.trace(model, record, cfg=cfg)` runs the model's own forward once, on the dataset dict through
the same test-time transform, and keeps what every stage of that forward recorded. Its `outputs`
are `model(inputs)`, bit for bit, panoptic map included, and the record's annotations are joined
to the detections."""),
    code("""tr = wi.trace(model, record, cfg=cfg)
print(tr)
assert all(torch.equal(tr.inputs[0][k], inp[k]) if torch.is_tensor(inp[k]) else tr.inputs[0][k] == inp[k]
           for k in ("image", "height", "width"))

out, ref = tr.outputs[0], outputs[0]
assert same_instances(out["instances"], ref["instances"])
assert torch.equal(out["sem_seg"], ref["sem_seg"]) and torch.equal(out["panoptic_seg"][0], ref["panoptic_seg"][0])
assert out["panoptic_seg"][1] == ref["panoptic_seg"][1]
for name, f in tr.backbone.features.items():  # p2..p6: strides 4..64 over the padded batch
    stride = 2 ** int(name[1])
    assert f.shape == (1, 48, -(-352 // stride), -(-320 // stride))
n_det = len(ref["instances"])
assert len(tr.proposals[0]) == 200 and len(tr.instances[0]) == n_det
assert len(tr.box.candidates[0]) >= int(tr.box.nms_kept[0].sum()) >= n_det
assert tr.mask.logits.shape == (n_det, 7, 28, 28) and tr.keypoint.heatmaps.shape == (n_det, 5, 56, 56)"""),
    md("""The FPN maps the heads see, averaged over channels (`vis.level_grid`): one panel per
level, from stride 4 (p2) to stride 64 (p6)."""),
    code("""grid = vis.level_grid(tr.backbone.features)
show(grid, scale=0.8)
assert {k: v.shape for k, v in grid.drawn["arrays"].items()} == {k: tuple(v.shape[-2:]) for k, v in tr.backbone.features.items()}"""),
    md("""## 1 · Anchors

Each FPN level has one anchor size and three aspect ratios at every cell, so level *l* holds
H<sub>l</sub> x W<sub>l</sub> x 3 anchors. Below: the anchors of the cell the top detection
started from."""),
    code("""rpn, gen = tr.rpn, model.proposal_generator
for name, a in zip(rpn.in_features, rpn.anchors):
    h, w = tr.backbone.features[name].shape[-2:]
    size = a.area()[:3].sqrt().round()
    print(f"{name}: {h:2d} x {w:2d} cells x 3 = {len(a):5d} anchors of side {int(size[0])}")
    assert len(a) == h * w * 3 and torch.all(size == size[0])
assert [int(a.area()[0].sqrt().round()) for a in rpn.anchors] == [16, 32, 64, 128, 256]

top = tr.detection(0)
y, x, _ = top.anchor_yxa
v = vis.Visualizer(shown, metadata)
v.draw_boxes(gt_boxes.tensor, [[1, 1, 1]] * len(gt_boxes), linewidth=1)
v.draw_anchors(rpn.anchors[top.level], tr.backbone.features[top.level_name].shape[-2:], (y, x))
show(v.get_output())
assert len(v.drawn["anchor_rows"]) == 3 and top.anchor_index in v.drawn["anchor_rows"]"""),
    md("""## 2 · RPN targets

The trace records inference, which has no targets. Training labels anchors with the RPN's own
matcher: IoU with a ground-truth box >= 0.7 is positive, < 0.3 negative, in between ignored, and
the best anchor of every box is positive whatever its IoU. The regression target of a positive
anchor is the delta that moves it onto its box. These depend on the anchors and the ground truth
only, not on the weights."""),
    code("""anchors = Boxes.cat(rpn.anchors)                          # (R, 4), levels one after the other
iou = pairwise_iou(gt_boxes, anchors)                      # (G, R)
matched, labels = gen.anchor_matcher(iou)                  # (R,) gt index and 1 / 0 / -1
pos, neg = labels == 1, labels == 0
print(f"{len(anchors)} anchors: {int(pos.sum())} positive, {int(neg.sum())} negative, "
      f"{int((labels == -1).sum())} ignored")
print("positive anchors per shape:", torch.bincount(matched[pos], minlength=len(gt_boxes)).tolist())
assert int(pos.sum()) + int(neg.sum()) + int((labels == -1).sum()) == len(anchors)
assert set(matched[pos].tolist()) == set(range(len(gt_boxes)))  # every shape has a positive anchor

target_deltas = gen.box2box_transform.get_deltas(anchors.tensor[pos], gt_boxes.tensor[matched[pos]])
moved = gen.box2box_transform.apply_deltas(target_deltas, anchors.tensor[pos])
assert torch.allclose(moved, gt_boxes.tensor[matched[pos]], atol=1e-3)  # targets move anchors onto the shapes

# Training samples 128 of them per image, at most half positive (random, seeded above):
sampled, _ = gen.label_and_sample_anchors(rpn.anchors, [Instances((H, W), gt_boxes=gt_boxes)])
s = sampled[0]
print(f"sampled for the loss: {int((s == 1).sum())} positive, {int((s == 0).sum())} negative")
assert int((s == 1).sum()) == min(int(pos.sum()), 64) and int((s >= 0).sum()) == 128
assert bool(pos[s == 1].all()) and bool(neg[s == 0].all())"""),
    md("""How the trained RPN scores them: the objectness of positive anchors is high, that of
negatives low (sigmoid of the logit, averaged)."""),
    code("""objectness = torch.cat([o[0] for o in rpn.objectness]).sigmoid()   # (R,), same anchor order
p_pos, p_neg = float(objectness[pos].mean()), float(objectness[neg].mean())
print(f"mean objectness: positives {p_pos:.2f}, negatives {p_neg:.3f}")
assert p_pos > 0.3 and p_neg < 0.05

v = vis.Visualizer(shown, metadata)
v.draw_boxes(anchors.tensor[pos], [[1.0, 0.1, 0.6]] * int(pos.sum()), linewidth=2)
v.draw_boxes(gt_boxes.tensor, [[1, 1, 1]] * len(gt_boxes), linewidth=2, linestyle="--")
show(v.get_output())"""),
    md("""## 3 · RPN predictions: top anchors, refinement, clipping, NMS

The RPN head predicts an objectness logit and four deltas for every anchor. Inference takes the
best `PRE_NMS_TOPK_TEST` anchors of each level, applies their deltas (refinement), clips the
boxes to the image, drops empty ones, runs NMS per level and keeps the best
`POST_NMS_TOPK_TEST` overall. The trace keeps each step: `rpn.deltas`, `rpn.decoded`,
`rpn.candidates` (clipped, before NMS) and `rpn.proposals`."""),
    code("""logits = torch.cat([o[0] for o in rpn.objectness])          # (R,)
deltas = torch.cat([d[0] for d in rpn.deltas])               # (R, 4)
decoded = torch.cat([d[0] for d in rpn.decoded])             # (R, 4): deltas applied, not clipped
best = logits.topk(50).indices                               # the 50 top anchors of the image
refined = gen.box2box_transform.apply_deltas(deltas[best], anchors.tensor[best])
assert torch.allclose(refined, decoded[best], atol=1e-4)

cand = rpn.candidates[0]                                     # top-500 per level, clipped, non-empty
offsets = torch.tensor([0] + [len(a) for a in rpn.anchors]).cumsum(0)
unclipped = decoded[offsets[cand.level] + cand.anchor_index]
clipped = cand.proposal_boxes.tensor
bounds = torch.tensor([W, H, W, H], dtype=torch.float32)
assert torch.equal(clipped, torch.minimum(unclipped.clamp(min=0), bounds))
n_topk = sum(min(len(a), rpn.pre_nms_topk) for a in rpn.anchors)
n_clip = int((clipped != unclipped).any(dim=1).sum())
print(f"{n_topk} top anchors ({rpn.pre_nms_topk} per level or all of a level), "
      f"{n_clip} of them clipped, {n_topk - len(cand)} dropped as empty")
assert 0 <= n_clip <= len(cand) <= n_topk == 500 * 3 + 11 * 10 * 3 + 6 * 5 * 3

props = rpn.proposals[0]
assert bool((rpn.proposal_candidate[0] >= 0).all())          # every proposal is a candidate
level = rpn.proposal_level(0)
for l in range(len(rpn.in_features)):                        # NMS is per level: no pair above 0.7
    b = props.proposal_boxes[level == l]
    ious = pairwise_iou(b, b).fill_diagonal_(0)
    assert len(b) < 2 or float(ious.max()) <= rpn.nms_thresh
print(f"NMS (IoU {rpn.nms_thresh}, per level) and top {rpn.post_nms_topk}: "
      f"{len(cand)} candidates -> {len(props)} proposals")
assert len(props) == rpn.post_nms_topk == 200 and rpn.nms_thresh == 0.7"""),
    md("""Left to right: the 50 top anchors, the same boxes refined, then clipped, and the 50 best
proposals after NMS; colour is objectness (yellow high)."""),
    code("""panels = []
for boxes in (anchors.tensor[best], refined, torch.minimum(refined.clamp(min=0), bounds)):
    panels.append(vis.Visualizer(shown).draw_proposals((boxes, logits[best]), topk=50))
panels.append(vis.Visualizer(shown).draw_proposals(props, topk=50))
show(*panels, scale=0.6)
assert all(len(p.drawn["kept"]) == 50 for p in panels)"""),
    md("""Each proposal is pooled from one FPN level, chosen by its size (`vis.rois_per_level`)."""),
    code("""levels_view = vis.rois_per_level(tr, model)
show(levels_view, scale=0.8)
print("ROIs per level:", levels_view.drawn["counts"])
assert sum(levels_view.drawn["counts"].values()) == 200
assert levels_view.drawn["counts"] == {f"p{l + 2}": int((tr.box.stages[0].pooler_level == l).sum()) for l in range(4)}"""),
    md("""### RPN recall

The fraction of ground-truth boxes that some proposal covers at IoU >= 0.5 and >= 0.7, on this
image and on the first eight validation images (one batch through the stage functions
`wi.stages.preprocess`, `backbone`, `rpn`)."""),
    code("""def recall(gt, proposals, thresh):
    return float((pairwise_iou(gt, proposals).max(dim=1).values >= thresh).float().mean())

batch_records = val[:8]
batch = [load(r)[1] for r in batch_records]
with torch.no_grad():
    pre = wi.stages.preprocess(model, batch)
    rpn8 = wi.stages.rpn(model, pre, wi.stages.backbone(model, pre))
best_iou = torch.cat([pairwise_iou(gt_boxes_of(r, x), p.proposal_boxes).max(dim=1).values
                      for r, x, p in zip(batch_records, batch, rpn8.proposals)])
rec = {t: (recall(gt_boxes, props.proposal_boxes, t), float((best_iou >= t).float().mean()))
       for t in (0.5, 0.7)}
for t, (r1, r8) in rec.items():
    print(f"recall at IoU >= {t}: this image {r1:.2f}, 8 images ({len(best_iou)} shapes) {r8:.2f}")
assert rec[0.5][1] >= 0.6 and rec[0.7][1] >= 0.2   # loose bounds: a small model trained on a CPU
assert rec[0.7][0] <= rec[0.5][0] and rec[0.7][1] <= rec[0.5][1]
assert len(best_iou) == sum(len(r["annotations"]) for r in batch_records) == 40"""),
    md("""## 4 · Box head: per-class refinement and NMS

The box head scores every proposal over the 7 classes plus background and refines it once per
class (`box.boxes`: 7 boxes per ROI). Inference keeps (ROI, class) pairs scoring above
`SCORE_THRESH_TEST`, clips their class box, runs NMS per class and keeps the best 100.
`tr.detection(i)` follows detection *i* back through all of it."""),
    code("""box = tr.box
K = box.scores[0].shape[1] - 1
class_boxes = box.boxes[0].view(-1, K, 4)                    # (200, 7, 4): every ROI, every class
d = tr.detection(0)
print(d)

inst = outputs[0]["instances"]
assert torch.equal(d.box, inst.pred_boxes.tensor[0]) and d.score == float(inst.scores[0]) and d.cls == int(inst.pred_classes[0])
assert torch.equal(d.proposal_box, tr.proposals[0].proposal_boxes.tensor[d.roi_index])
assert d.objectness == float(tr.proposals[0].objectness_logits[d.roi_index])
assert torch.equal(d.anchor_box, rpn.anchors[d.level].tensor[d.anchor_index])
fh, fw = tr.backbone.features[d.level_name].shape[-2:]
assert (d.anchor_yxa[0] * fw + d.anchor_yxa[1]) * 3 + d.anchor_yxa[2] == d.anchor_index
assert d.pooler_level == int(box.stages[0].pooler_level[d.roi_index])
refined_box = Boxes(class_boxes[d.roi_index, d.cls][None].clone())
refined_box.clip((H, W))
assert torch.equal(refined_box.tensor[0], d.box_input)       # the class box, clipped, is the detection"""),
    code("""report = box.nms_report(0)
print(f"score > {box.score_thresh}: {len(report['kept'])} (ROI, class) pairs; NMS at IoU {box.nms_thresh} keeps:")
for c in range(K):
    sel = report["class"] == c
    if sel.any():
        print(f"  {metadata.thing_classes[c]:9s} {int(sel.sum()):3d} -> {int(report['kept'][sel].sum()):3d}")
    kept_boxes = Boxes(class_boxes[report["roi"][sel & report["kept"]], c].clone())
    kept_boxes.clip((H, W))
    ious = pairwise_iou(kept_boxes, kept_boxes).fill_diagonal_(0)
    assert len(kept_boxes) < 2 or float(ious.max()) <= box.nms_thresh
kept_pairs = set(zip(report["roi"][report["kept"]].tolist(), report["class"][report["kept"]].tolist()))
det_pairs = set(zip(box.roi_index[0].tolist(), box.instances[0].pred_classes.tolist()))
assert det_pairs <= kept_pairs and len(det_pairs) == min(len(kept_pairs), box.topk)
assert box.score_thresh == 0.05 and box.nms_thresh == 0.5"""),
    md("""Left: the confident detections (score > 0.5, solid) and the proposals they were refined from
(dashed). Middle and right: the candidates of the top detection's class before and after NMS."""),
    code("""confident = (inst.scores > 0.5).nonzero()[:, 0]
p = tr.provenance(0)
left = vis.Visualizer(photo, metadata)  # original px: the proposals mapped back from input px
left.draw_boxes(tr.preprocess.to_original(p.proposal_boxes[confident]), [[1, 1, 1]] * len(confident),
                linestyle="--", linewidth=1)
left.draw_instance_predictions(inst[confident], show_masks=False, show_keypoints=False)

sel = report["class"] == d.cls
before = Boxes(class_boxes[report["roi"][sel], d.cls].clone())
before.clip((H, W))
mid = vis.Visualizer(shown).draw_boxes(before.tensor, linewidth=1)
right = vis.Visualizer(shown).draw_boxes(before.tensor[report["kept"][sel]], linewidth=1)
show(left.get_output(), mid, right, scale=0.6)
assert len(mid.drawn["boxes"]) == int(sel.sum()) >= len(right.drawn["boxes"]) >= 1"""),
    md("""Final detections against the ground truth (`Visualizer.compare`, IoU >= 0.5, same class):
a prediction on an object of another class is a *mislabel*, named on both panels; a false positive
overlaps no object (or repeats one already found: a duplicate)."""),
    code("""cmp = vis.Visualizer(photo, metadata).compare(record, inst, score_thresh=0.5)
show(cmp, scale=0.8)
n_match = len(cmp.drawn["matches"])
print(f"score > 0.5: {n_match} of {len(gt_boxes)} shapes found, {len(cmp.drawn['missed'])} missed, "
      f"{len(cmp.drawn['mislabels'])} mislabelled, {len(cmp.drawn['false_positives'])} false positives")
assert n_match + len(cmp.drawn["missed"]) == len(gt_boxes) and n_match >= 1"""),
    md("""## 5 · Masks: 28 x 28 logits, then pasted

The mask head predicts a 28 x 28 logit map per class for each detection (`tr.mask.logits`).
Inference keeps the predicted class's map, applies the sigmoid, and `detector_postprocess`
pastes it into the box at full resolution, thresholded at 0.5."""),
    code("""raw = tr.instances[0]                                     # detections at input resolution
rows = tr.output_rows[0]                                   # output detection -> raw row
probs = raw.pred_masks[:, 0]                               # (D, 28, 28)
assert torch.equal(probs, tr.mask.logits[torch.arange(len(raw)), raw.pred_classes].sigmoid())
pasted = paste_masks_in_image(probs[rows], inst.pred_boxes, (OH, OW))  # boxes in original px
assert torch.equal(pasted, inst.pred_masks)                # (D, H, W) bool, the model's masks

g = int(pairwise_iou(Boxes(d.box[None]), gt_boxes_original).argmax())
ann = record["annotations"][g]
gt_mask = torch.from_numpy(polygons_to_bitmask([np.asarray(s) for s in ann["segmentation"]], OH, OW))
mask_iou = float((gt_mask & inst.pred_masks[0]).sum() / (gt_mask | inst.pred_masks[0]).sum())
print(f"top detection ({metadata.thing_classes[d.cls]}): mask IoU with its shape {mask_iou:.2f}")
assert ann["category_id"] == d.cls and mask_iou >= 0.5

view = vis.mask_logits_view(tr, 0, input_format="RGB")
show(view)
assert np.array_equal(view.drawn["logits"], tr.mask.logits[rows[0], d.cls].numpy())"""),
    md("""## 6 · Keypoint heatmaps

Five keypoints per shape (top, right, bottom, left, centre), each a 56 x 56 heatmap over the box.
A keypoint is the heatmap's peak after resizing it to the box, so it always lies inside the box."""),
    code("""heatmaps = tr.keypoint.heatmaps                           # (D, 5, 56, 56) logits
kp = inst.pred_keypoints                                    # (D, 5, 3): x, y, score
x0, y0, x1, y1 = inst.pred_boxes.tensor.unbind(1)
inside = (kp[..., 0] >= x0[:, None] - 1) & (kp[..., 0] <= x1[:, None] + 1) & \\
         (kp[..., 1] >= y0[:, None] - 1) & (kp[..., 1] <= y1[:, None] + 1)
assert bool(inside.all()) and torch.equal(inst.pred_keypoint_heatmaps, heatmaps[rows])

gt_kp = torch.tensor(ann["keypoints"], dtype=torch.float32).view(-1, 3)
err = (kp[0, :, :2] - gt_kp[:, :2]).norm(dim=1)
side = float((d.box[2:] - d.box[:2]).max())
for name, e in zip(metadata.keypoint_names, err.tolist()):
    print(f"  {name:6s} {e:5.1f} px from the ground truth")
print(f"(the box is {side:.0f} px across)")
assert float(err.mean()) <= 0.25 * side

view = vis.keypoint_heatmaps_view(tr, 0, names=metadata.keypoint_names, input_format="RGB")
show(view)
assert np.array_equal(view.drawn["heatmaps"], heatmaps[rows[0]].numpy())"""),
    md("""## 7 · Ground truth joined in: what each detection is, and why a shape was missed

The record's annotations came with the trace. Every detection is matched to them COCO-style
(by decreasing score, IoU >= 0.5) and labelled as TIDE does: `tp`, `duplicate`, `mislabel`,
`localisation`, `both` or `background`. `tr.why_missed(j)` follows a shape no detection took
back through the stages: the best anchor of each level, the best RPN candidate and what NMS did
to it, the proposal the heads got, its class scores, and the step that dropped it."""),
    code("""from collections import Counter

matches = tr.matches(0)
print("detections:", dict(Counter(m.kind for m in matches)))
print("top detection:", tr.detection(0).match)
missed = tr.missed(0)
print("missed shapes:", [metadata.thing_classes[int(gt_classes[j])] for j in missed])
for j in missed:
    print(tr.why_missed(j))
assert len(matches) == len(inst) and sum(m.kind == "tp" for m in matches) + len(missed) == len(gt_boxes)
assert all(tr.why_missed(j).lost_at is not None for j in missed)
taken = [m.gt for m in matches if m.kind == "tp"]
assert sorted(taken + missed) == list(range(len(gt_boxes)))"""),
    md("""Next: notebook 04 takes features out of the model: hooks by module name, per-detection
embeddings, features of boxes you draw, dataset-scale extraction and open-world probes."""),
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_build import write_executed  # noqa: E402

write_executed(cells, "03_step_through.ipynb")
