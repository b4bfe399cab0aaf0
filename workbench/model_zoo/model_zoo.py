"""Model-zoo lookup: shipped copies of detectron2's YAML and ``.py`` configs, checkpoint URLs.

Config paths are relative to detectron2's ``configs/`` folder, e.g.
``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"``; the same strings work here.

``.py`` files are LazyConfigs (:mod:`workbench.config.lazy`): ``get_config`` returns an omegaconf
``DictConfig`` for them, as detectron2 does, and ``get`` builds ``instantiate(cfg.model)``. They
are detectron2's files unchanged (imports of ``detectron2.X`` are read as ``workbench.X`` while a
config runs), and loading one runs it: they are Python code shipped inside the package.
Besides ``configs/`` (``common/``, ``new_baselines/``, ``COCO-*/*.py``, ``Misc/*.py``), the
configs of two detectron2 projects ship under the project's name, the path a detectron2 user
types after ``projects/<name>/configs/``:

* ``projects/ViTDet/configs/X``  -> ``"ViTDet/X"``, e.g. ``"ViTDet/COCO/mask_rcnn_vitdet_b_100ep.py"``;
* ``projects/MViTv2/configs/X``  -> ``"MViTv2/X"``, e.g. ``"MViTv2/mask_rcnn_mvitv2_t_3x.py"``.

(detectron2's own ``model_zoo`` resolves only ``configs/``; the project folders keep their
layout, so their relative imports such as ``from ..common.coco_loader_lsj import dataloader``
work unchanged.) The YAML
files under ``workbench/model_zoo/configs`` carry the same values as detectron2's (one
difference in form: ``Base-RetinaNet.yaml`` spells its anchor sizes as numbers instead of a
``!!python/object/apply:eval`` tag, so that it loads with safe YAML).

Errors keep detectron2's exception type (``RuntimeError``) so that existing ``except`` clauses
still apply, and list the closest known names.
"""

from __future__ import annotations

import difflib
import os
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from workbench.config import CfgNode, LazyConfig, get_cfg

if TYPE_CHECKING:  # torch is only needed by get(); importing the zoo must not require it
    import torch.nn
    from omegaconf import DictConfig

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
    # New baselines (LazyConfig .py files): large-scale jitter and longer schedules
    "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ": "42047764/model_final_bb69de.pkl",
    "new_baselines/mask_rcnn_R_50_FPN_200ep_LSJ": "42047638/model_final_89a8d3.pkl",
    "new_baselines/mask_rcnn_R_50_FPN_400ep_LSJ": "42019571/model_final_14d201.pkl",
    "new_baselines/mask_rcnn_R_101_FPN_100ep_LSJ": "42025812/model_final_4f7b58.pkl",
    "new_baselines/mask_rcnn_R_101_FPN_200ep_LSJ": "42131867/model_final_0bb7ae.pkl",
    "new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ": "42073830/model_final_f96b26.pkl",
    "new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ": "42047771/model_final_b7fbab.pkl",
    "new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_200ep_LSJ": "42132721/model_final_5d87c1.pkl",
    "new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_400ep_LSJ": "42025447/model_final_f1362d.pkl",
    "new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ": "42047784/model_final_6ba57e.pkl",
    "new_baselines/mask_rcnn_regnety_4gf_dds_FPN_200ep_LSJ": "42047642/model_final_27b9c1.pkl",
    "new_baselines/mask_rcnn_regnety_4gf_dds_FPN_400ep_LSJ": "42045954/model_final_ef3a80.pkl",
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
    # LVIS, Cityscapes, Pascal VOC
    "LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x": "144219072/model_final_571f7c.pkl",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_R_101_FPN_1x": "144219035/model_final_824ab5.pkl",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_1x": "144219108/model_final_5e3439.pkl",
    "Cityscapes/mask_rcnn_R_50_FPN": "142423278/model_final_af9cf5.pkl",
    "PascalVOC-Detection/faster_rcnn_R_50_C4": "142202221/model_final_b1acc2.pkl",
    # Other settings: deformable convs, GN, SyncBN, training from scratch
    "Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5": "138602867/model_final_65c703.pkl",
    "Misc/mask_rcnn_R_50_FPN_3x_dconv_c3-c5": "144998336/model_final_821d0b.pkl",
    "Misc/mask_rcnn_R_50_FPN_3x_syncbn": "169527823/model_final_3b3c51.pkl",
    "Misc/mask_rcnn_R_50_FPN_3x_gn": "138602888/model_final_dc5d9e.pkl",
    "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn": "138602908/model_final_01ca85.pkl",
    "Misc/scratch_mask_rcnn_R_50_FPN_9x_gn": "183808979/model_final_da7b4c.pkl",
    "Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn": "184226666/model_final_5ce33e.pkl",
    "Misc/panoptic_fpn_R_101_dconv_cascade_gn_3x": "139797668/model_final_be35db.pkl",
    "Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv": "18131413/model_0039999_e76410.pkl",
    # Detectron1 comparisons
    "Detectron1-Comparisons/faster_rcnn_R_50_FPN_noaug_1x": "137781054/model_final_7ab50c.pkl",
    "Detectron1-Comparisons/mask_rcnn_R_50_FPN_noaug_1x": "137781281/model_final_62ca52.pkl",
    "Detectron1-Comparisons/keypoint_rcnn_R_50_FPN_1x": "137781195/model_final_cce136.pkl",
}


# Weights that ship inside the package: models workbench trains itself (no download needed).
# "<config path without .yaml>" -> file under workbench/model_zoo/weights/.
_EMBEDDED_WEIGHTS_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
_EMBEDDED_WEIGHTS: Dict[str, str] = {
    "Shapes/panoptic_kp_R_50_FPN_small": "Shapes/panoptic_kp_R_50_FPN_small.pth",
}


def _name_without_suffix(config_path: str) -> str:
    name = config_path.replace("\\", "/")
    for suffix in (".yaml", ".py"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def embedded_weights_path(config_path: str) -> Optional[str]:
    """The packaged weight file of a model workbench trained itself, or None for other configs.

    Raises:
        FileNotFoundError: The config has embedded weights but the file is missing from this
            installation (a broken or partial install).
    """
    name = _name_without_suffix(config_path)
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


def list_configs(suffix: Optional[str] = None) -> List[str]:
    """Returns the config paths shipped with workbench, sorted (``Base-*`` files included).

    Args:
        suffix: ``".yaml"`` or ``".py"`` to list one kind only; None lists both (the ``.py``
            files include the pieces other configs import, such as ``common/optim.py``).
    """
    suffixes = (".yaml", ".py") if suffix is None else (suffix,)
    if not set(suffixes) <= {".yaml", ".py"}:
        raise ValueError(f"suffix must be '.yaml', '.py' or None, got {suffix!r}.")
    found = []
    for folder, _, files in os.walk(_CONFIG_ROOT):
        for name in files:
            if name.endswith(suffixes):
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
    """Returns the absolute path of a shipped model-zoo config file (``.yaml`` or ``.py``).

    Args:
        config_path: Path relative to detectron2's ``configs/`` folder, e.g.
            ``"COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"``, or ``"ViTDet/..."`` /
            ``"MViTv2/..."`` for those projects' configs (see the module docstring).

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
        config_path: As for :func:`get_config_file`; the ``.yaml`` / ``.py`` suffix is optional.

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
    name = _name_without_suffix(config_path)
    suffix = _CHECKPOINT_SUFFIX.get(name)
    if suffix is None:
        raise RuntimeError(
            f"No trained weights are known for {config_path!r}. "
            f"{_close_names(name, sorted(_CHECKPOINT_SUFFIX))}"
        )
    return f"{_URL_PREFIX}{name}/{suffix}"


def get_config(config_path: str, trained: bool = False) -> Union[CfgNode, "DictConfig"]:
    """Returns the config of a model-zoo entry.

    For a ``.yaml`` file: ``get_cfg()`` with the YAML merged in (a ``CfgNode``). For a ``.py``
    file: the LazyConfig it defines (an omegaconf ``DictConfig`` with ``model``, ``train``,
    ``dataloader``, ... as the file sets them); loading it runs the shipped file.

    Args:
        config_path: As for :func:`get_config_file`.
        trained: If True, the weights to load are the COCO-trained checkpoint's URL (the
            packaged file for workbench's own ``Shapes/`` models): ``MODEL.WEIGHTS`` for YAML
            configs, ``train.init_checkpoint`` for ``.py`` ones. If False they stay as the file
            sets them: usually ImageNet weights for the backbone only
            (``detectron2://ImageNetPretrained/...``), the heads being randomly initialised.

    Raises:
        RuntimeError: Unknown config, or ``trained=True`` and no trained weights are known for
            it, or (``.py``) the config has no ``train.init_checkpoint`` to set.
    """
    config_file = get_config_file(config_path)
    if config_file.endswith(".py"):
        lazy_cfg = LazyConfig.load(config_file)
        if trained:
            url = get_checkpoint_url(config_path)
            if "train" not in lazy_cfg or "init_checkpoint" not in lazy_cfg.train:
                raise RuntimeError(
                    f"{config_path!r} defines no train.init_checkpoint to set the trained "
                    f"weights {url} into."
                )
            lazy_cfg.train.init_checkpoint = url
        return lazy_cfg
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(config_path)
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None) -> "torch.nn.Module":
    """Builds a model-zoo model and loads its weights.

    For a ``.py`` config the model is ``instantiate(cfg.model)``, moved to ``device``, with
    ``cfg.train.init_checkpoint`` loaded when the config sets one (as in detectron2).

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
    if not isinstance(cfg, CfgNode):
        from workbench.config import instantiate

        model = instantiate(cfg.model)
        if device is not None:
            model = model.to(device)
        checkpoint = cfg.train.get("init_checkpoint") if "train" in cfg else None
        if checkpoint:
            DetectionCheckpointer(model).load(checkpoint)
        return model
    if device is not None:
        cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model
