"""Load a reference fixture folder (config, weights, inputs, stored outputs, losses).

A folder is a case when it holds ``meta.json`` and ``config.yaml``; see the fixtures' README.
The fixtures live outside the repo: ``$WORKBENCH_FIXTURES`` or ``<repo>/../shared/fixtures``.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from fixture_paths import FIXTURES  # tests/ is on sys.path (tests/conftest.py)


# Where the models run: $WORKBENCH_DEVICE ("cpu" by default; "cuda" on a GPU machine, see
# bench/gpu_check.sh). The tolerances are the same on every device.
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")

# Every parity check of an inference output runs twice: with all of workbench.utils.perf's
# inference optimisations on (fold_batchnorm included, which is off by default) and all off.
OPT_MODES = {"opt_on": True, "opt_off": False}


def optimisations(mode: str):
    """Context manager setting every inference optimisation on ("opt_on") or off ("opt_off")."""
    from workbench.utils import perf

    return perf.inference_options(enabled=OPT_MODES[mode])


def fixture_root() -> Path:
    if not FIXTURES.is_dir():
        raise FileNotFoundError(
            f"Reference fixtures not found at {FIXTURES}. Set WORKBENCH_FIXTURES to the folder that "
            "holds the reference cases (each with meta.json and config.yaml)."
        )
    return FIXTURES


def case_names() -> List[str]:
    if not FIXTURES.is_dir():
        # Collection must not silently produce zero cases: one placeholder makes the test fail.
        return ["<fixtures missing>"]
    return sorted(p.name for p in FIXTURES.iterdir()
                  if (p / "meta.json").is_file() and (p / "config.yaml").is_file())


@dataclass
class Case:
    name: str
    path: Path
    meta: Dict[str, Any]
    cfg: Any
    inputs: Optional[Dict[str, np.ndarray]] = None
    outputs: Optional[Dict[str, np.ndarray]] = None
    losses: Optional[Dict[str, Any]] = None
    gt_npz: Optional[Dict[str, np.ndarray]] = None
    gt_json: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len([k for k in self.inputs if k.endswith("/image_chw_float32")])

    def weights_path(self) -> Path:
        """The case's own weights, or those of the folder named in ``weights.same_as_fixture``."""
        for name in ("model_final.pth", "model_final.pkl"):
            if (self.path / name).is_file():
                return self.path / name
        other = self.meta.get("weights", {}).get("same_as_fixture")
        if other:
            return load_case(other).weights_path()
        raise FileNotFoundError(f"No weights in {self.path} and no weights.same_as_fixture in meta.json.")

    def model_inputs(self) -> List[Dict[str, Any]]:
        """``list[dict]`` exactly as the reference gave its model."""
        batch = []
        for i in range(self.num_images):
            d: Dict[str, Any] = {"image": torch.from_numpy(self.inputs[f"img{i}/image_chw_float32"])}
            if bool(self.inputs[f"img{i}/has_height_width_keys"]):
                h, w = (int(v) for v in self.inputs[f"img{i}/requested_hw"])
                d["height"], d["width"] = h, w
            batch.append(d)
        return batch


@functools.lru_cache(maxsize=None)
def load_case(name: str) -> Case:
    from workbench.config import get_cfg

    path = fixture_root() / name
    meta = json.loads((path / "meta.json").read_text())
    cfg = get_cfg()
    cfg.merge_from_file(str(path / "config.yaml"))
    cfg.MODEL.DEVICE = DEVICE
    case = Case(name=name, path=path, meta=meta, cfg=cfg)
    if (path / "inputs.npz").is_file():
        case.inputs = dict(np.load(path / "inputs.npz"))
    if (path / "outputs.npz").is_file():
        case.outputs = dict(np.load(path / "outputs.npz"))
    if (path / "losses.json").is_file():
        case.losses = json.loads((path / "losses.json").read_text())
    if (path / "gt.npz").is_file():
        case.gt_npz = dict(np.load(path / "gt.npz"))
    if (path / "gt.json").is_file():
        case.gt_json = json.loads((path / "gt.json").read_text())
    return case


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """A plain reader for the fixtures' weights (the checkpointer has its own tests)."""
    if path.suffix == ".pth":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        sd = obj.get("model", obj)
    else:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
        sd = obj.get("model", obj)
    return {k: torch.as_tensor(np.asarray(v)) for k, v in sd.items()}


def build_reference_model(case: Case, device: Optional[str] = None):
    """Build the case's model (on ``device``, default the case's ``MODEL.DEVICE``) and load its
    weights strictly (except non-persistent buffers)."""
    from workbench.modeling import build_model

    cfg = case.cfg
    if device is not None and device != cfg.MODEL.DEVICE:
        cfg = cfg.clone()
        cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    sd = read_state_dict(case.weights_path())
    incompatible = model.load_state_dict(sd, strict=False)
    missing = [k for k in incompatible.missing_keys]
    unexpected = [k for k in incompatible.unexpected_keys
                  if not k.endswith(("pixel_mean", "pixel_std"))]
    if missing or unexpected:
        raise AssertionError(
            f"{case.name}: weights do not fit the model built from config.yaml.\n"
            f"missing: {missing[:20]}\nunexpected: {unexpected[:20]}"
        )
    model.eval()
    return model


def training_seed(case: Case) -> int:
    m = re.search(r"torch\.manual_seed\((\d+)\)", case.losses.get("how", ""))
    if not m:
        raise ValueError(f"{case.name}: losses.json 'how' names no torch.manual_seed(...).")
    return int(m.group(1))


def training_inputs(case: Case, variant: str) -> List[Dict[str, Any]]:
    """Inputs with ground truth ``Instances`` for the named ``losses.json`` variant."""
    from workbench.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks

    entries = case.gt_json[variant] if case.gt_json and variant in case.gt_json else None
    batch = []
    for i in range(case.num_images):
        image = torch.from_numpy(case.inputs[f"img{i}/image_chw_float32"])
        inst = Instances(tuple(image.shape[1:]))
        inst.gt_boxes = Boxes(torch.from_numpy(case.gt_npz[f"img{i}/gt_boxes"]))
        inst.gt_classes = torch.from_numpy(case.gt_npz[f"img{i}/gt_classes"]).long()
        mask_type = entries[i].get("gt_masks_type") if entries else None
        if mask_type == "PolygonMasks":
            polys = [[np.asarray(p, dtype=np.float64) for p in obj]
                     for obj in entries[i]["gt_masks_polygons"]]
            inst.gt_masks = PolygonMasks(polys)
        elif mask_type == "BitMasks" or (mask_type is None and f"img{i}/gt_masks_bitmask" in case.gt_npz):
            inst.gt_masks = BitMasks(torch.from_numpy(case.gt_npz[f"img{i}/gt_masks_bitmask"]))
        if f"img{i}/gt_keypoints" in case.gt_npz:
            inst.gt_keypoints = Keypoints(torch.from_numpy(case.gt_npz[f"img{i}/gt_keypoints"]))
        d = {"image": image, "instances": inst}
        if f"img{i}/gt_sem_seg" in case.gt_npz:
            d["sem_seg"] = torch.from_numpy(case.gt_npz[f"img{i}/gt_sem_seg"].astype(np.int64))
        batch.append(d)
    return batch


# -- comparisons with the README's tolerances ---------------------------------------------------

def max_abs(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max()) if a.size else 0.0


def assert_relative_map(name: str, got, want, rel: float) -> float:
    """max |got - want| <= rel * max |want|; returns the achieved ratio."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != reference {want.shape}"
    scale = float(np.abs(want).max()) or 1.0
    ratio = max_abs(got, want) / scale
    assert ratio <= rel, f"{name}: max abs diff {ratio:.3g} x max|ref| exceeds {rel:g}"
    return ratio


def mask_ious(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got = got.reshape(len(got), -1).astype(bool)
    want = want.reshape(len(want), -1).astype(bool)
    inter = (got & want).sum(1)
    union = (got | want).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def match_proposals(got_boxes: np.ndarray, got_logits: np.ndarray, want_boxes: np.ndarray,
                    want_logits: np.ndarray, box_tol: float = 1e-2, logit_tol: float = 1e-4):
    """Pair each reference proposal with one of ours, order-free among near-tied objectness.

    Proposals come sorted by objectness; two whose logits differ by less than float noise may
    legitimately swap places (the README bounds objectness to 1e-4, not their order). Each
    reference proposal is matched to an unused proposal of ours whose logit is within
    ``logit_tol`` and whose box is within ``box_tol`` px. Returns (unmatched reference indices,
    worst box diff, worst logit diff) over the matched pairs.
    """
    order = np.argsort(got_logits, kind="stable")
    sorted_logits = got_logits[order]
    used = np.zeros(len(got_logits), dtype=bool)
    unmatched, worst_box, worst_logit = [], 0.0, 0.0
    for i in range(len(want_boxes)):
        lo = np.searchsorted(sorted_logits, want_logits[i] - logit_tol, side="left")
        hi = np.searchsorted(sorted_logits, want_logits[i] + logit_tol, side="right")
        best, best_d = -1, np.inf
        for j in order[lo:hi]:
            if used[j]:
                continue
            d = np.abs(got_boxes[j].astype(np.float64) - want_boxes[i]).max()
            if d < best_d:
                best, best_d = j, d
        if best < 0 or best_d > box_tol:
            unmatched.append(i)
            continue
        used[best] = True
        worst_box = max(worst_box, float(best_d))
        worst_logit = max(worst_logit, abs(float(got_logits[best]) - float(want_logits[i])))
    return unmatched, worst_box, worst_logit
