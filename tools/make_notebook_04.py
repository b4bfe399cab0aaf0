"""Write notebooks/04_hooks_and_features.ipynb from its cells and execute it in place.

Run from the repo root: .venv/bin/python tools/make_notebook_04.py
"""
import sys
from pathlib import Path

import nbformat

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell

cells = [
    md("""# 04 · Hooks and features

Getting tensors out of a detector: forward hooks by module name (detectron2's third option for
intermediate tensors), the per-detection features a trace keeps, features of boxes you draw
yourself, extraction over a whole folder of images, and two open-world probes built on those
features.

The model is workbench's embedded Panoptic FPN trained on the procedural shapes dataset."""),
    code("""import shutil, tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workbench import extract as wx, inspect as wi, model_zoo
from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data import transforms as T
from workbench.structures import Boxes, BoxMode, pairwise_iou

torch.set_num_threads(2)  # the stored outputs were made with 2 threads (see the README)
torch.manual_seed(0)
np.random.seed(0)

cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
model = model_zoo.get("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True).eval()
metadata = MetadataCatalog.get("shapes_val")
val = DatasetCatalog.get("shapes_val_100")



def ground_truth(record):
    \"\"\"Boxes (XYXY, original pixels) and classes of a dataset dict's shapes.\"\"\"
    annos = record["annotations"]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
    return Boxes(torch.tensor(boxes, dtype=torch.float32)), torch.tensor([a["category_id"] for a in annos])


record = val[0]
photo = np.asarray(Image.open(record["file_name"]).convert("RGB"))       # (H, W, 3), the model wants RGB
gt_boxes, gt_classes = ground_truth(record)
tr = wi.trace(model, record, cfg=cfg)     # the scored pass, kept for the comparisons below (notebook 03)
inputs = tr.inputs                        # the evaluator's input dict: resized, with height / width
outputs = tr.outputs                      # == model(inputs), bit for bit
n_det = len(outputs[0]["instances"])
print(f"image {photo.shape[1]} x {photo.shape[0]}, {len(gt_boxes)} shapes")
assert photo.shape == (384, 352, 3) and len(gt_boxes) == 7 and n_det >= 1"""),
    md("""## What can be hooked: `wi.list_modules`

Hooks are attached by module name, the names of `model.named_modules()`. `list_modules` runs one
forward and prints every name with what the module returned; `max_depth` keeps the listing
short."""),
    code("""rows = wi.list_modules(model, inputs, max_depth=2)
summary = {name: s for name, _, s in rows}
assert len(rows) == 28 and "not called" not in summary.values()
assert summary["backbone"] == wi.describe(tr.backbone.features)
assert summary["backbone.bottom_up"] == wi.describe(tr.backbone.bottom_up)
assert summary["roi_heads.box_pooler"] == "(200, 48, 7, 7)"
assert summary["roi_heads.box_head"] == wi.describe(tr.box.stages[0].embeddings) == "(200, 256)"
assert summary["roi_heads.box_predictor"] == "((200, 8), (200, 28))"
assert summary["roi_heads.mask_pooler"] == summary["roi_heads.keypoint_pooler"] == f"({n_det}, 48, 14, 14)"
assert summary["sem_seg_head"] == "((1, 4, 352, 320), {})\""""),
    md("""## Forward hooks by name and glob: `wi.capture`

Inside the `with` block the named modules record what they return; outside it the model runs as
if nothing had happened (the hooks are removed on exit). In a pattern `*` matches within one
part of a dotted name, so `backbone.bottom_up.res*` is the four ResNet stages and not their
blocks; `**` would cross dots. `inputs=True` also records what each module received."""),
    code("""names = ["backbone.bottom_up.res*", "roi_heads.box_head", "proposal_generator.rpn_head.conv",
         "roi_heads.mask_head.predictor"]
with wi.capture(model, names, inputs=True) as cap, torch.no_grad():
    model(inputs)
print(cap)
assert cap.names == ["backbone.bottom_up.res2", "backbone.bottom_up.res3", "backbone.bottom_up.res4",
                     "backbone.bottom_up.res5", "proposal_generator.rpn_head.conv", "roi_heads.box_head",
                     "roi_heads.mask_head.predictor"]
for stage in ("res2", "res3", "res4", "res5"):
    assert torch.equal(cap[f"backbone.bottom_up.{stage}"], tr.backbone.bottom_up[stage])
assert torch.equal(cap["roi_heads.box_head"], tr.box.stages[0].embeddings)  # the trace keeps the same
assert torch.equal(cap["roi_heads.mask_head.predictor"], tr.mask.logits)"""),
    md("""A module called several times, such as the RPN head's shared conv (once per FPN level), has
one entry per call in `cap.outputs`; `cap[name]` refuses to pick one. The recorded input of the
mask predictor is the upsampled 28 x 28 feature map, which the trace does not keep."""),
    code("""per_level = cap.outputs["proposal_generator.rpn_head.conv"]
print(len(per_level), "calls:", [tuple(t.shape[-2:]) for t in per_level])
assert [t.shape[-2:] for t in per_level] == [f.shape[-2:] for f in tr.backbone.features.values()]
try:
    cap["proposal_generator.rpn_head.conv"]
except ValueError as e:
    print("cap[name]:", str(e).split(";")[0])

(args, kwargs), = cap.inputs["roi_heads.mask_head.predictor"]
upsampled = args[0]
print("mask predictor input:", tuple(upsampled.shape))
assert upsampled.shape == (n_det, 64, 28, 28)
with torch.no_grad():
    assert torch.equal(model.roi_heads.mask_head.predictor(upsampled), tr.mask.logits)"""),
    md("""## Per-detection features, with provenance: `tr.detection(i)`

A trace knows where each final detection came from: the proposal, the anchor and FPN level that
proposal came from, the level its ROI was pooled from, the pooled features, the box-head
embedding and the class logits before NMS."""),
    code("""d = tr.detection(0)
print(d)

inst = outputs[0]["instances"]
assert torch.equal(d.box, inst.pred_boxes.tensor[0]) and d.score == float(inst.scores[0]) and d.cls == int(inst.pred_classes[0])
assert torch.equal(d.proposal_box, tr.proposals[0].proposal_boxes.tensor[d.roi_index])
assert d.objectness == float(tr.proposals[0].objectness_logits[d.roi_index])
assert torch.equal(d.anchor_box, tr.rpn.anchors[d.level].tensor[d.anchor_index])
assert d.level_name == tr.rpn.in_features[d.level] and d.pooler_level == int(tr.box.stages[0].pooler_level[d.roi_index])
assert torch.equal(d.embedding, tr.box.stages[0].embeddings[d.roi_index])
assert d.pooled.shape == (48, 7, 7) and d.logits.shape == (8,)
with torch.no_grad():  # the box head on the pooled features gives the embedding again
    assert torch.allclose(model.roi_heads.box_head(d.pooled[None])[0], d.embedding, atol=1e-5)
assert torch.allclose(d.logits.softmax(0), d.probs, atol=1e-6)"""),
    md("""`tr.provenance(image)` has the same fields for all detections of an image at once, one row
per detection of `outputs[image]["instances"]`."""),
    code("""p = tr.provenance(0)
print("embeddings", tuple(p.embeddings.shape), "| logits", tuple(p.logits.shape),
      "| mask logits", tuple(p.mask_logits.shape), "| keypoint heatmaps", tuple(p.keypoint_heatmaps.shape))
print("top 5:")
for i in range(min(5, len(p))):
    print(f"  {metadata.thing_classes[p.classes[i]]:9s} {float(p.scores[i]):.3f}  "
          f"anchor on {p.level_names[p.level[i]]}, pooled from p{int(p.pooler_level[i]) + 2}")
assert p.embeddings.shape == (n_det, 256) and p.logits.shape == (n_det, 8)
assert p.mask_logits.shape == (n_det, 7, 28, 28) and p.keypoint_heatmaps.shape == (n_det, 5, 56, 56)
assert torch.equal(p.scores, inst.scores) and bool((p.scores[:-1] >= p.scores[1:]).all())"""),
    md("""## Features of boxes you draw: `wi.roi_features`

Give boxes in the photo's pixels; they are mapped into the network's input, pooled with the
model's own pooler (which picks the FPN level from the box size) and, by default, run through
the box head. Here: the seven ground-truth boxes and two patches of background."""),
    code("""background = torch.tensor([[5., 5., 60., 45.], [10., 300., 80., 370.]])
assert float(pairwise_iou(Boxes(background), gt_boxes).max()) == 0   # no shape in them
boxes = torch.cat([gt_boxes.tensor, background])
rf = wi.roi_features(model, tr, [boxes])
print(rf)
assert rf.pooled.shape == (9, 48, 7, 7) and rf.embeddings.shape == (9, 256) and rf.logits.shape == (9, 8)

# the pooler's level rule: floor(4 + log2(sqrt(area) / 224)), clamped to p2..p5
pooled_boxes = rf.boxes[0]                               # the boxes mapped into input px
side = (pooled_boxes[:, 2:] - pooled_boxes[:, :2]).prod(1).sqrt()
assert torch.equal(rf.level, (4 + torch.log2(side / 224)).floor().clamp(2, 5).long() - 2)

names = metadata.thing_classes + ["background"]
probs = rf.logits.softmax(1)
for i in range(len(boxes)):
    truth = names[gt_classes[i]] if i < len(gt_boxes) else "background"
    c = int(probs[i].argmax())
    print(f"  {truth:10s} (p{int(rf.level[i]) + 2})  ->  {names[c]:10s} {float(probs[i, c]):.2f}")
bg_shapes, bg_empty = float(probs[:7, 7].mean()), float(probs[7:, 7].mean())
print(f"mean background probability: shapes {bg_shapes:.2f}, background patches {bg_empty:.2f}")
assert bg_shapes < bg_empty and bool((probs[7:].argmax(1) == 7).all())

# The proposal box of detection 0 (input px) gives its embedding back.
again = wi.roi_features(model, tr, [d.proposal_box[None]], coords="input")
assert torch.allclose(again.embeddings[0], d.embedding, atol=1e-5)"""),
    md("""## Dataset-scale extraction: `workbench.extract`

`extract` runs the model over a folder of images (or a COCO json) and writes `.npz` shards and
JSON manifests, with no pickle anywhere. The same from a shell, in the repository's root:

```bash
python -m workbench.extract --config-file Shapes/panoptic_kp_R_50_FPN_small.yaml \\
    --weights workbench/model_zoo/weights/Shapes/panoptic_kp_R_50_FPN_small.pth \\
    --input photos/ --output feats/ --features detections det_logits fpn_pooled
```

Six validation images (not the one above) go into a temporary folder; shards and batches of 2
images, resized as `DefaultPredictor` does."""),
    code("""workdir = Path(tempfile.mkdtemp())
photos, feats_dir = workdir / "photos", workdir / "feats"
photos.mkdir()
for r in val[1:7]:
    shutil.copy(r["file_name"], photos)

settings = dict(features=["detections", "det_logits", "fpn_pooled"], batch_size=2, shard_size=2,
                min_size=cfg.INPUT.MIN_SIZE_TEST, max_size=cfg.INPUT.MAX_SIZE_TEST,
                input_format=cfg.INPUT.FORMAT, progress=False)
manifest = wx.extract(model, photos, feats_dir, **settings)
files = sorted(p.name for p in feats_dir.iterdir())
print(files)
print("detections per image:", [n for e in manifest["shards"] for n in e["num_detections"]])
assert files == ["config.json", "manifest.json"] + [f"shard-0000{k}.{x}" for k in range(3) for x in ("json", "npz")]
assert len(manifest["shards"]) == 3 and manifest["num_images"] == 6
assert all(1 <= n <= 100 for e in manifest["shards"] for n in e["num_detections"])"""),
    md("""**Interrupted, then resumed.** A shard's `.npz` is written first and its `.json` last, so a
run killed while writing the last shard leaves shards 0 and 1 complete, shard 2 without its
`.json`, and no `manifest.json`. Put the folder in that state by hand and run the same call
again: the complete shards are kept (each is checked against its SHA-256), shard 2 is redone,
byte for byte as before."""),
    code("""digests = {e["file"]: e["sha256"] for e in manifest["shards"]}
kept_mtime = [(feats_dir / f"shard-0000{k}.npz").stat().st_mtime_ns for k in (0, 1)]
(feats_dir / "shard-00002.json").unlink()
(feats_dir / "manifest.json").unlink()
with open(feats_dir / "shard-00002.npz", "r+b") as f:
    f.truncate(1000)                                    # half written
try:
    wx.load_extracted(feats_dir)
except FileNotFoundError as e:
    print("before resuming:", str(e).replace(str(feats_dir), "feats"))

manifest = wx.extract(model, photos, feats_dir, **settings)
assert [(feats_dir / f"shard-0000{k}.npz").stat().st_mtime_ns for k in (0, 1)] == kept_mtime  # kept
assert {e["file"]: e["sha256"] for e in manifest["shards"]} == digests      # identical files
print("resumed: shard 2 redone, every file identical to the uninterrupted run")"""),
    md("""**Opening the result.** `load_extracted` reads the manifest; `concat` joins an array over the
shards. The detections are the model's: a trace of the first batch, loaded and resized the same
way, gives the same boxes and embeddings, bit for bit."""),
    code("""ds = wx.load_extracted(feats_dir)
emb, det_image = ds.concat("det/embeddings"), ds.concat("det/image")
scores, classes, logits = ds.concat("det/scores"), ds.concat("det/classes"), ds.concat("det/logits")
print(f"{len(ds)} shards, {ds.manifest['num_images']} images, {len(emb)} detections; "
      f"embeddings {emb.shape[1]}-d, logits {logits.shape[1]}, image vectors {ds.concat('fpn_pooled/p5').shape}")
assert emb.shape == (len(det_image), 256) and logits.shape == (len(emb), 8) and ds.concat("fpn_pooled/p5").shape == (6, 48)
assert len(emb) == sum(n for e in ds.manifest["shards"] for n in e["num_detections"])

resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
first = []
for rec in wx.list_images(photos)[:2]:
    arr = np.asarray(Image.open(rec.path).convert("RGB"))
    small = resize.get_transform(arr).apply_image(arr)
    first.append({"image": torch.as_tensor(small.transpose(2, 0, 1).astype("float32")),
                  "height": arr.shape[0], "width": arr.shape[1]})
tr2 = wi.trace(model, first, detections_only=True)
shard = ds.shard(0)
for i in range(2):
    q = tr2.provenance(i, anchors=False)
    rows = shard["det/image"] == i
    assert np.array_equal(shard["det/boxes"][rows], q.boxes.numpy())
    assert np.array_equal(shard["det/embeddings"][rows], q.embeddings.numpy())"""),
    md("""## Open-world probes: `wi.openworld`

**Energy.** The free energy of a detection's class logits, `-logsumexp(logits)` over the known
classes (the background column left out), is low when some known class fits. As *known*, take
the extracted detections that cover a ground-truth shape (IoU >= 0.5) and name its class; for
contrast, score boxes of pure background on the held-out image, which match no class. A
threshold fitted on the known energies alone keeps 95 % of them; given both sets, `fit` picks
the threshold that best separates them (balanced accuracy)."""),
    code("""ow = wi.openworld
gt_of = {Path(r["file_name"]).name: ground_truth(r) for r in val[1:7]}
det_boxes = torch.from_numpy(ds.concat("det/boxes"))
true_cls = torch.full((len(det_boxes),), -1)             # class of the shape a detection covers
for i, name in enumerate(ds.concat("image_id")):
    rows = torch.from_numpy(np.nonzero(det_image == i)[0])
    boxes_i, classes_i = gt_of[str(name)]
    best, g = pairwise_iou(Boxes(det_boxes[rows]), boxes_i).max(dim=1)
    true_cls[rows[best >= 0.5]] = classes_i[g[best >= 0.5]]
on_shape = true_cls >= 0
right_class = on_shape & (torch.from_numpy(classes) == true_cls)
known = ow.energy_score(torch.from_numpy(logits))[right_class]

grid = torch.tensor([[x, y, x + 48., y + 48.] for y in range(0, 336, 32) for x in range(0, 304, 32)])
empty = grid[pairwise_iou(Boxes(grid), gt_boxes).max(dim=1).values == 0]   # boxes touching no shape
unknown = ow.energy_score(wi.roi_features(model, tr, [empty]).logits)
print(f"{len(known)} detections of the right class on a shape: mean energy {float(known.mean()):.2f}; "
      f"{len(empty)} background boxes: {float(unknown.mean()):.2f}")
assert len(empty) == 42 and len(known) >= 8 and float(unknown.mean()) > float(known.mean())


def balanced(rule):
    return 0.5 * float((known <= rule.threshold).float().mean() + (unknown > rule.threshold).float().mean())


q95 = ow.EnergyThreshold.fit(known, quantile=0.95)
best = ow.EnergyThreshold.fit(known, unknown)
print(f"95% quantile: threshold {q95.threshold:.2f}, balanced accuracy {balanced(q95):.2f}")
print(f"fitted on both: threshold {best.threshold:.2f}, balanced accuracy {balanced(best):.2f}")
assert float((known > q95.threshold).float().mean()) <= 0.05 + 1 / len(known)
assert balanced(best) >= max(balanced(q95), 0.5)

flags = best.flag(tr)[0]                               # one flag per detection of the traced image
assert flags.shape == (n_det,) and torch.equal(flags, best.is_unknown(p.logits))"""),
    md("""**Class prototypes.** The mean box-head embedding of each class is a prototype; the nearest
prototype classifies a new embedding. Build them from the extracted detections that cover a
shape (labelled with that shape's class) and try them on the held-out image's ground-truth
boxes, whose embeddings `roi_features` gave above. The store saves to an `.npz` (no pickle)."""),
    code("""store = ow.EmbeddingStore()
store.add(torch.from_numpy(emb)[on_shape], true_cls[on_shape])
print("embeddings per class:", {metadata.thing_classes[c]: n for c, n in store.counts().items()})
assert sum(store.counts().values()) == int(on_shape.sum()) and store.prototypes().shape == (len(store.classes), 256)

nearest, dist = store.nearest(rf.embeddings[:7])
hits = int((nearest == gt_classes).sum())
print(f"nearest prototype = true class for {hits} of the 7 held-out shapes")
assert hits >= 2

store.save(str(workdir / "prototypes.npz"))
loaded = ow.EmbeddingStore.load(str(workdir / "prototypes.npz"))
assert loaded.counts() == store.counts() and torch.equal(loaded.prototypes(), store.prototypes())
shutil.rmtree(workdir)"""),
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_build import write_executed  # noqa: E402

write_executed(cells, "04_hooks_and_features.ipynb")
