"""Write notebooks/06_checkpoints_and_custom_models.ipynb from its cells and execute it in place.

Run from the repo root: .venv/bin/python tools/make_notebook_06.py
"""
import sys
from pathlib import Path

import nbformat

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell

cells = [
    md("""# 06 · Checkpoints and custom models

What a weight file holds, how workbench reads each format detectron2 users meet (`.pth`,
model-zoo `.pkl`, Caffe2/Detectron1 `.pkl`), what the missing/unexpected-key report means, and how
to plug your own ROI heads and backbone into the registries — detectron2's "write models"
tutorial, in workbench.

Loading never runs code from the file: `.pth` goes through `torch.load(weights_only=True)` and
`.pkl` through an unpickler that admits only arrays, numbers, strings and containers."""),
    code("""import pickle, tempfile
from pathlib import Path

import torch
from workbench import model_zoo
from workbench.checkpoint import DetectionCheckpointer
from workbench.config import get_cfg
from workbench.modeling import build_model

torch.manual_seed(0)
cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml")
cfg.MODEL.DEVICE = "cpu"
model = build_model(cfg)
n_params = sum(p.numel() for p in model.parameters())
print(f"{type(model).__name__}: {n_params / 1e6:.2f} M parameters")
assert n_params > 1_000_000"""),
    md("""## Save and load (`.pth`)

`save(name)` writes `save_dir/name.pth` atomically (a temporary file, then a rename) and records it
in `save_dir/last_checkpoint`; extra keyword arguments are stored beside the weights and come back
from `load`."""),
    code("""workdir = Path(tempfile.mkdtemp())
checkpointer = DetectionCheckpointer(model, save_dir=str(workdir))
checkpointer.save("model_999", iteration=999)
print(sorted(p.name for p in workdir.iterdir()))

fresh = build_model(cfg)
extra = DetectionCheckpointer(fresh).load(str(workdir / "model_999.pth"))
print("extra:", extra)
same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
print("bit-identical after reload:", same)
assert same and extra["iteration"] == 999"""),
    md("""## The model-zoo `.pkl` format

detectron2's model zoo ships `{"model": {name: numpy array}, "__author__": ...}` pickles. The
names are the model's own state-dict names, so they load directly."""),
    code("""pkl = workdir / "model_final.pkl"
with open(pkl, "wb") as f:
    pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()},
                 "__author__": "notebook 06"}, f)
other = build_model(cfg)
DetectionCheckpointer(other).load(str(pkl))
assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
print("loaded", len(model.state_dict()), "tensors from the .pkl")"""),
    md("""## Caffe2 / Detectron1 names

Old Detectron checkpoints name tensors the Caffe2 way (`res2_0_branch2a_w`, `fpn_inner_res5_2_sum_w`,
`rpn_conv_fpn2_w`, `fc6_w`, `mask_fcn1_w`). With `"__author__": "Caffe2"` (or
`?matching_heuristics=True` on the path) the checkpointer renames them by rules, then matches each
model key to its longest suffix among the loaded names, checking shapes. The reference fixture
below carries the same weights as `mask_rcnn_R_50_FPN/model_final.pkl` under Caffe2 names."""),
    code("""# Found the way the tests find them: $WORKBENCH_FIXTURES, else <repo>/../shared/fixtures
# (next to the imported package, whatever the working directory).
from workbench.utils.fixtures import fixture_folder

c2_dir, d2_dir = fixture_folder("mask_rcnn_R_50_FPN_c2"), fixture_folder("mask_rcnn_R_50_FPN")
c2_cfg = get_cfg()
c2_cfg.merge_from_file(str(c2_dir / "config.yaml"))
c2_cfg.MODEL.DEVICE = "cpu"
with open(c2_dir / "model_final_c2.pkl", "rb") as f:
    print("a few Caffe2 names:", sorted(pickle.load(f, encoding="latin1")["model"])[:3])
c2_model = build_model(c2_cfg)
ckpt = DetectionCheckpointer(c2_model)
ckpt.load(str(c2_dir / "model_final_c2.pkl"))
print(ckpt.incompatible_keys)
assert not ckpt.incompatible_keys.missing_keys and not ckpt.incompatible_keys.unexpected_keys

d2_model = build_model(c2_cfg)
DetectionCheckpointer(d2_model).load(str(d2_dir / "model_final.pkl"))
assert all(torch.equal(a, b) for a, b in zip(c2_model.state_dict().values(), d2_model.state_dict().values()))
print("Caffe2-named and detectron2-named files give the same model, bit for bit")"""),
    md("""## Reading the missing / unexpected report: fine-tuning with another class count

Load the 8-class fixture weights into a 3-class model. Tensors whose shape does not fit (the class
scores, the class-specific box deltas and mask predictor) are skipped with a warning that names
them; they stay at their random initialisation and show up as *missing*. Everything else loads:
that is how you fine-tune from a detector trained on other classes."""),
    code("""ft_cfg = c2_cfg.clone()
ft_cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
ft_model = build_model(ft_cfg)
ckpt = DetectionCheckpointer(ft_model)
ckpt.load(str(d2_dir / "model_final.pkl"))
for key, in_file, in_model in ckpt.incompatible_keys.incorrect_shapes:
    print(f"{key:45s} file {tuple(in_file)} -> model {tuple(in_model)}")
skipped = {k for k, _, _ in ckpt.incompatible_keys.incorrect_shapes}
assert skipped == {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
                   "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias",
                   "roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias"}
assert set(ckpt.incompatible_keys.missing_keys) == skipped"""),
    md("""## A custom ROI head, registered by name

Subclass a built-in head, register it, and name it in the config. Here the box branch also keeps
the box-head embedding of every final detection (what `workbench.inspect` gives without a
subclass — this is the detectron2 way)."""),
    code("""from workbench.modeling import ROI_HEADS_REGISTRY, StandardROIHeads

@ROI_HEADS_REGISTRY.register()
class ROIHeadsWithEmbeddings(StandardROIHeads):
    def _forward_box(self, features, proposals):
        if self.training:
            return super()._forward_box(features, proposals)
        feats = self.box_pooler([features[f] for f in self.box_in_features],
                                [p.proposal_boxes for p in proposals])
        embeddings = self.box_head(feats)
        predictions = self.box_predictor(embeddings)
        instances, kept = self.box_predictor.inference(predictions, proposals)
        per_image = embeddings.split([len(p) for p in proposals])
        for inst, emb, idx in zip(instances, per_image, kept):
            inst.embeddings = emb[idx]
        return instances

custom_cfg = c2_cfg.clone()
custom_cfg.MODEL.ROI_HEADS.NAME = "ROIHeadsWithEmbeddings"
custom = build_model(custom_cfg)
DetectionCheckpointer(custom).load(str(d2_dir / "model_final.pkl"))
custom.eval()
image = torch.rand(3, 320, 480) * 255
with torch.no_grad():
    inst = custom([{"image": image}])[0]["instances"]
    plain = d2_model.eval()([{"image": image}])[0]["instances"]
print("one embedding per detection, of size", inst.embeddings.shape[1])
assert inst.embeddings.shape == (len(inst), c2_cfg.MODEL.ROI_BOX_HEAD.FC_DIM)
assert torch.equal(inst.pred_boxes.tensor, plain.pred_boxes.tensor)  # same detections as before"""),
    md("""## A custom backbone

A backbone is a module returning named feature maps, plus `output_shape()` so that the heads can
be sized without running it. Register a builder `fn(cfg, input_shape)` and name it in
`MODEL.BACKBONE.NAME`."""),
    code("""from torch import nn
from workbench.layers import ShapeSpec
from workbench.modeling import BACKBONE_REGISTRY, Backbone

class TinyBackbone(Backbone):
    def __init__(self, in_channels, channels=32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=4, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=4, padding=1), nn.ReLU())
        self._out_features = ["p4"]
        self._out_feature_channels = {"p4": channels}
        self._out_feature_strides = {"p4": 16}

    def forward(self, x):
        return {"p4": self.body(x)}

@BACKBONE_REGISTRY.register()
def build_tiny_backbone(cfg, input_shape):
    return TinyBackbone(input_shape.channels)

tiny_cfg = model_zoo.get_config("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
tiny_cfg.merge_from_list([
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.BACKBONE.NAME", "build_tiny_backbone",
    "MODEL.RPN.IN_FEATURES", ["p4"], "MODEL.ROI_HEADS.IN_FEATURES", ["p4"],
    "MODEL.ANCHOR_GENERATOR.SIZES", [[32, 64, 128]], "MODEL.ROI_HEADS.NUM_CLASSES", 2,
])
tiny = build_model(tiny_cfg).eval()
print(tiny.backbone.output_shape())
with torch.no_grad():
    out = tiny([{"image": torch.rand(3, 128, 160) * 255}])
assert set(out[0]) == {"instances"} and out[0]["instances"].image_size == (128, 160)"""),
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_build import write_executed  # noqa: E402

write_executed(cells, "06_checkpoints_and_custom_models.ipynb")
