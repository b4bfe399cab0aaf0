"""Model-zoo lookup: shipped copies of detectron2's YAML configs and its checkpoint URLs.

Config paths are relative to detectron2's ``configs/`` folder, e.g.
``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"``; the same strings work here. The YAML
files under ``workbench/model_zoo/configs`` carry the same values as detectron2's (one
difference in form: ``Base-RetinaNet.yaml`` spells its anchor sizes as numbers instead of a
``!!python/object/apply:eval`` tag, so that it loads with safe YAML).

Errors keep detectron2's exception type (``RuntimeError``) so that existing ``except`` clauses
still apply, and list the closest known names.
"""

from __future__ import annotations

import difflib
import os
from typing import TYPE_CHECKING, Dict, List, Optional

from workbench.config import CfgNode, get_cfg

if TYPE_CHECKING:  # torch is only needed by get(); importing the zoo must not require it
    import torch.nn

__all__ = ["embedded_weights_path", "get", "get_checkpoint_url", "get_config", "get_config_file", "list_configs"]

_CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

_URL_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

# Trained COCO weights released by detectron2, for the configs shipped here:
# "<config path without .yaml>" -> "<model id>/model_final_<hash>.pkl".
# The ids and hashes are facts from detectron2's model_zoo.py (_ModelZooUrls).
_CHECKPOINT_SUFFIX: Dict[str, str] = {
    # Faster R-CNN
    "COCO-Detection/faster_rcnn_R_50_C4_1x": "137257644/model_final_721ade.pkl",
    "COCO-Detection/faster_rcnn_R_50_DC5_1x": "137847829/model_final_51d356.pkl",
    "COCO-Detection/faster_rcnn_R_50_FPN_1x": "137257794/model_final_b275ba.pkl",
    "COCO-Detection/faster_rcnn_R_50_C4_3x": "137849393/model_final_f97cb7.pkl",
    "COCO-Detection/faster_rcnn_R_50_DC5_3x": "137849425/model_final_68d202.pkl",
    "COCO-Detection/faster_rcnn_R_50_FPN_3x": "137849458/model_final_280758.pkl",
    "COCO-Detection/faster_rcnn_R_101_C4_3x": "138204752/model_final_298dad.pkl",
    "COCO-Detection/faster_rcnn_R_101_DC5_3x": "138204841/model_final_3e0943.pkl",
    "COCO-Detection/faster_rcnn_R_101_FPN_3x": "137851257/model_final_f6e8b1.pkl",
    "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x": "139173657/model_final_68b088.pkl",
    # RetinaNet
    "COCO-Detection/retinanet_R_50_FPN_1x": "190397773/model_final_bfca0b.pkl",
    "COCO-Detection/retinanet_R_50_FPN_3x": "190397829/model_final_5bd44e.pkl",
    "COCO-Detection/retinanet_R_101_FPN_3x": "190397697/model_final_971ab9.pkl",
    # RPN alone, and Fast R-CNN on precomputed proposals
    "COCO-Detection/rpn_R_50_C4_1x": "137258005/model_final_450694.pkl",
    "COCO-Detection/rpn_R_50_FPN_1x": "137258492/model_final_02ce48.pkl",
    "COCO-Detection/fast_rcnn_R_50_FPN_1x": "137635226/model_final_e5f7ce.pkl",
    # Mask R-CNN
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x": "137259246/model_final_9243eb.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_1x": "137260150/model_final_4f86c3.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x": "137260431/model_final_a54504.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x": "137849525/model_final_4ce675.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_3x": "137849551/model_final_84107b.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x": "137849600/model_final_f10217.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x": "138363239/model_final_a2914c.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_DC5_3x": "138363294/model_final_0464b7.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x": "138205316/model_final_a3ec72.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x": "139653917/model_final_2d9806.pkl",
    # Keypoint R-CNN
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x": "137261548/model_final_04e291.pkl",
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x": "137849621/model_final_a6e10b.pkl",
    "COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x": "138363331/model_final_997cc7.pkl",
    "COCO-Keypoints/keypoint_rcnn_X_101_32x8d_FPN_3x": "139686956/model_final_5ad38f.pkl",
    # Panoptic FPN
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x": "139514544/model_final_dbfeb4.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x": "139514569/model_final_c10459.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_101_3x": "139514519/model_final_cafdb1.pkl",
    # Cascade Mask R-CNN
    "Misc/cascade_mask_rcnn_R_50_FPN_1x": "138602847/model_final_e9d89b.pkl",
    "Misc/cascade_mask_rcnn_R_50_FPN_3x": "144998488/model_final_480dd8.pkl",
}


# Weights that ship inside the package: models workbench trains itself (no download needed).
# "<config path without .yaml>" -> file under workbench/model_zoo/weights/.
_EMBEDDED_WEIGHTS_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
_EMBEDDED_WEIGHTS: Dict[str, str] = {
    "Shapes/panoptic_kp_R_50_FPN_small": "Shapes/panoptic_kp_R_50_FPN_small.pth",
}


def embedded_weights_path(config_path: str) -> Optional[str]:
    """The packaged weight file of a model workbench trained itself, or None for other configs.

    Raises:
        FileNotFoundError: The config has embedded weights but the file is missing from this
            installation (a broken or partial install).
    """
    name = config_path.replace("\\", "/")
    if name.endswith(".yaml"):
        name = name[: -len(".yaml")]
    rel = _EMBEDDED_WEIGHTS.get(name)
    if rel is None:
        return None
    path = os.path.join(_EMBEDDED_WEIGHTS_ROOT, rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The embedded weights of {config_path!r} should be at {path}, but that file is "
            "missing: reinstall workbench (the file ships as package data)."
        )
    return path


def list_configs() -> List[str]:
    """Returns the config paths shipped with workbench, sorted (``Base-*`` files included)."""
    found = []
    for folder, _, files in os.walk(_CONFIG_ROOT):
        for name in files:
            if name.endswith(".yaml"):
                rel = os.path.relpath(os.path.join(folder, name), _CONFIG_ROOT)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def _close_names(name: str, known: List[str]) -> str:
    # Match the file name alone first: the right file is often in another folder
    # (COCO-Detection/mask_rcnn_... instead of COCO-InstanceSegmentation/mask_rcnn_...).
    by_base: Dict[str, List[str]] = {}
    for k in known:
        by_base.setdefault(k.rsplit("/", 1)[-1], []).append(k)
    base_name = name.rsplit("/", 1)[-1]
    close_bases = difflib.get_close_matches(base_name, list(by_base), n=5, cutoff=0.6)
    close = [k for base in close_bases for k in by_base[base]]
    close += [k for k in difflib.get_close_matches(name, known, n=5, cutoff=0.5) if k not in close]
    if close:
        return "Closest: " + ", ".join(repr(c) for c in close[:5]) + "."
    return "Available: " + ", ".join(repr(k) for k in known) + "."


def get_config_file(config_path: str) -> str:
    """Returns the absolute path of a shipped model-zoo YAML file.

    Args:
        config_path: Path relative to detectron2's ``configs/`` folder, e.g.
            ``"COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"``.

    Raises:
        RuntimeError: No such file ships with workbench; the message lists the closest names.
    """
    rel = config_path.replace("\\", "/")
    path = os.path.normpath(os.path.join(_CONFIG_ROOT, rel))
    inside = os.path.commonpath([path, _CONFIG_ROOT]) == _CONFIG_ROOT
    if not inside or not os.path.isfile(path):
        raise RuntimeError(
            f"{config_path!r} is not in workbench's model zoo. {_close_names(rel, list_configs())}"
        )
    return path


def get_checkpoint_url(config_path: str) -> str:
    """Returns the URL of detectron2's COCO-trained weights for a model-zoo config, or, for a
    model workbench trained itself (``Shapes/...``), the path of its packaged weight file.

    Args:
        config_path: As for :func:`get_config_file`; the ``.yaml`` suffix is optional.

    Returns:
        ``https://dl.fbaipublicfiles.com/detectron2/<config path without .yaml>/<model id>/
        model_final_<hash>.pkl``.

    Raises:
        RuntimeError: No trained weights are known for this config (``Base-*`` files, or a
            config not shipped here).
    """
    embedded = embedded_weights_path(config_path)
    if embedded is not None:
        return embedded
    name = config_path.replace("\\", "/")
    if name.endswith(".yaml"):
        name = name[: -len(".yaml")]
    suffix = _CHECKPOINT_SUFFIX.get(name)
    if suffix is None:
        raise RuntimeError(
            f"No trained weights are known for {config_path!r}. "
            f"{_close_names(name, sorted(_CHECKPOINT_SUFFIX))}"
        )
    return f"{_URL_PREFIX}{name}/{suffix}"


def get_config(config_path: str, trained: bool = False) -> CfgNode:
    """Returns the full config of a model-zoo entry: ``get_cfg()`` with the YAML merged in.

    Args:
        config_path: As for :func:`get_config_file`.
        trained: If True, ``MODEL.WEIGHTS`` is the URL of the COCO-trained checkpoint (the
            packaged file for workbench's own ``Shapes/`` models). If
            False it stays as the YAML sets it: usually ImageNet weights for the backbone only
            (``detectron2://ImageNetPretrained/...``), the heads being randomly initialised.
    """
    cfg = get_cfg()
    cfg.merge_from_file(get_config_file(config_path))
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(config_path)
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None) -> "torch.nn.Module":
    """Builds a model-zoo model and loads its weights.

    Args:
        config_path: As for :func:`get_config_file`.
        trained: See :func:`get_config`.
        device: Overrides ``MODEL.DEVICE``. When None, the config's device is kept if CUDA is
            available and ``"cpu"`` is used otherwise.

    Returns:
        The model, in training mode (call ``.eval()`` for inference), as in detectron2.

    Example::

        model = model_zoo.get("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", trained=True)
    """
    import torch

    from workbench.checkpoint import DetectionCheckpointer
    from workbench.modeling import build_model

    cfg = get_config(config_path, trained)
    if device is None and not torch.cuda.is_available():
        device = "cpu"
    if device is not None:
        cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model
