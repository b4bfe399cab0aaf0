"""Models built from LazyConfigs save and load with DetectionCheckpointer, in each of the forms
detectron2 ships their weights: a workbench ``.pth``, a model-zoo ``.pkl`` of numpy arrays, and
a bare backbone checkpoint (ImageNet / MAE pretraining) aligned by ``?matching_heuristics=True``.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from test_lazy_configs import _shrink  # same folder: the shrunk transformer backbones
from workbench import model_zoo
from workbench.checkpoint import DetectionCheckpointer
from workbench.config import instantiate

CONFIGS = [
    "ViTDet/COCO/mask_rcnn_vitdet_b_100ep.py",
    "ViTDet/COCO/cascade_mask_rcnn_swin_b_in21k_50ep.py",
    "MViTv2/mask_rcnn_mvitv2_t_3x.py",
    "new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ.py",
    "COCO-Detection/fcos_R_50_FPN_1x.py",
]


def _build(config_path: str, seed: int) -> torch.nn.Module:
    cfg = model_zoo.get_config(config_path)
    _shrink(cfg.model)
    if "proposal_generator" in cfg.model:  # fewer ROIs: a cascade runs its heads on each
        cfg.model.proposal_generator.pre_nms_topk = (200, 200)
        cfg.model.proposal_generator.post_nms_topk = (50, 50)
    torch.manual_seed(seed)
    return instantiate(cfg.model).eval()


def _outputs(model: torch.nn.Module):
    image = torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (out,) = model([{"image": image.to(torch.uint8), "height": 64, "width": 64}])
    inst = out["instances"]
    return inst.pred_boxes.tensor, inst.scores


def _randomise(model: torch.nn.Module) -> None:
    """Non-trivial weights everywhere (zero-initialised layers would hide a missed load)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)


@pytest.mark.parametrize("config_path", CONFIGS)
def test_model_zoo_pkl_and_pth_load_into_a_fresh_model(config_path, tmp_path):
    source = _build(config_path, seed=0)
    _randomise(source)
    for p in source.modules():  # detectron2-style score threshold: keep every detection
        for name in ("test_score_thresh", "score_threshold"):
            if isinstance(getattr(p, name, None), float):
                setattr(p, name, 0.0)
    want = _outputs(source)

    pth = tmp_path / "model.pth"
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("model")
    pkl = tmp_path / "model_final.pkl"
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    with open(pkl, "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)

    for path in (pth, pkl):
        target = _build(config_path, seed=1)
        for p in target.modules():
            for name in ("test_score_thresh", "score_threshold"):
                if isinstance(getattr(p, name, None), float):
                    setattr(p, name, 0.0)
        DetectionCheckpointer(target).load(str(path))
        got = _outputs(target)
        assert len(want[0]) > 0, f"{config_path}: no detections to compare"
        torch.testing.assert_close(got[0], want[0], msg=f"{config_path} from {path.name}")
        torch.testing.assert_close(got[1], want[1], msg=f"{config_path} from {path.name}")


def test_bare_vit_checkpoint_aligns_by_heuristics(tmp_path):
    # ViTDet starts from MAE weights saved from a bare ViT ("blocks.0.attn.qkv.weight", ...);
    # the config asks for them with "?matching_heuristics=True", which aligns them to
    # "backbone.net.blocks.0.attn.qkv.weight".
    model = _build("ViTDet/COCO/mask_rcnn_vitdet_b_100ep.py", seed=0)
    net = model.backbone.net
    bare = {k: v + 1.0 for k, v in net.state_dict().items()}
    bare["cls_token"] = torch.zeros(1, 1, net.pos_embed.shape[-1])  # MAE extras: not loaded
    path = tmp_path / "mae_pretrain_vit.pth"
    torch.save({"model": bare}, path)
    DetectionCheckpointer(model).load(f"{path}?matching_heuristics=True")
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, bare[k], msg=k)
