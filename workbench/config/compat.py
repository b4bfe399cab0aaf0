"""Reading configs written for older config formats (``VERSION`` 0 and 1).

detectron2 renamed some keys before its public release and bumped the config ``VERSION`` each
time. Config version ``X`` has a converter ``ConverterVX`` whose ``upgrade`` changes a full
version ``X - 1`` config into a version ``X`` one in place, and whose ``downgrade`` does the
reverse; neither touches ``VERSION``. :func:`upgrade_config` and :func:`downgrade_config` chain
them. ``CfgNode.merge_from_file`` uses them to read an old (partial) file: it downgrades the
current defaults to the file's version, merges the file there, and upgrades the result.

The converters assume a full config (every key they rename exists), not a partial one.
"""

from __future__ import annotations

import logging
from typing import List, Mapping, Optional, Tuple

from .config import CfgNode as CN
from .defaults import _C

__all__ = ["upgrade_config", "downgrade_config"]

logger = logging.getLogger(__name__)


def _converter(version: int) -> type:
    converter = globals().get(f"ConverterV{version}")
    if converter is None:
        raise ValueError(f"No converter for config VERSION {version}; known: 1..{_C.VERSION}.")
    return converter


def _version_of(cfg: CN) -> int:
    if "VERSION" not in cfg:
        raise KeyError("The config has no VERSION key; cannot tell which format it is in.")
    return cfg.VERSION


def upgrade_config(cfg: CN, to_version: Optional[int] = None) -> CN:
    """Returns a copy of ``cfg`` converted from its ``VERSION`` to a newer format.

    Args:
        cfg: a full config (not a partial one) carrying ``VERSION``.
        to_version: the format to convert to; default the latest (``get_cfg().VERSION``).

    Raises:
        ValueError: ``to_version`` is older than ``cfg.VERSION``.
    """
    cfg = cfg.clone()
    to_version = _C.VERSION if to_version is None else to_version
    version = _version_of(cfg)
    if version > to_version:
        raise ValueError(f"Cannot upgrade a config from VERSION {version} to VERSION {to_version}.")
    for k in range(version, to_version):
        _converter(k + 1).upgrade(cfg)
        cfg.VERSION = k + 1
    return cfg


def downgrade_config(cfg: CN, to_version: int) -> CN:
    """Returns a copy of ``cfg`` converted from its ``VERSION`` to an older format.

    A general downgrade is not always possible (older versions lack features); the aim is to
    recover an old version's defaults so that an old partial YAML file can be merged into them.

    Raises:
        ValueError: ``to_version`` is newer than ``cfg.VERSION``.
    """
    cfg = cfg.clone()
    version = _version_of(cfg)
    if version < to_version:
        raise ValueError(
            f"Cannot downgrade a config from VERSION {version} to VERSION {to_version}."
        )
    for k in range(version, to_version, -1):
        _converter(k).downgrade(cfg)
        cfg.VERSION = k - 1
    return cfg


def guess_version(cfg: Mapping, filename: str) -> int:
    """The format of a partial config without ``VERSION``: 1 when it uses v1-only keys.

    Files with ``MODEL.WEIGHT`` or ``TEST.AUG_ON`` are old v1 files; anything else is assumed
    to be in the latest format. Logs a warning either way.
    """

    def _has(name: str) -> bool:
        cur = cfg
        for part in name.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return False
            cur = cur[part]
        return True

    if _has("MODEL.WEIGHT") or _has("TEST.AUG_ON"):
        logger.warning("Config '%s' has no VERSION. Assuming it to be v1.", filename)
        return 1
    logger.warning(
        "Config '%s' has no VERSION. Assuming it to be compatible with the latest v%d.",
        filename, _C.VERSION,
    )
    return _C.VERSION


def _rename(cfg: CN, old: str, new: str) -> None:
    """Moves the value at dotted key ``old`` to ``new``; groups left empty are removed."""
    old_keys, new_keys = old.split("."), new.split(".")

    node = cfg
    for i, k in enumerate(old_keys[:-1]):
        if k not in node:
            raise KeyError(f"Cannot rename config key '{old}' to '{new}': there is no "
                           f"'{'.'.join(old_keys[: i + 1])}'.")
        node = node[k]
    if old_keys[-1] not in node:
        raise KeyError(f"Cannot rename config key '{old}' to '{new}': '{old}' does not exist.")
    value = node[old_keys[-1]]

    target = cfg
    for k in new_keys[:-1]:
        if k not in target:
            target[k] = CN()
        target = target[k]
    target[new_keys[-1]] = value

    _delete(cfg, old_keys)


def _delete(cfg: CN, keys: List[str]) -> None:
    node = cfg
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    if len(node) == 0 and len(keys) > 1:
        _delete(cfg, keys[:-1])


class _RenameConverter:
    """A converter made of plain key renames, ``RENAME = [(old, new), ...]``."""

    RENAME: List[Tuple[str, str]] = []

    @classmethod
    def upgrade(cls, cfg: CN) -> None:
        for old, new in cls.RENAME:
            _rename(cfg, old, new)

    @classmethod
    def downgrade(cls, cfg: CN) -> None:
        for old, new in reversed(cls.RENAME):
            _rename(cfg, new, old)


class ConverterV1(_RenameConverter):
    """VERSION 0 -> 1."""

    RENAME = [("MODEL.RPN_HEAD.NAME", "MODEL.RPN.HEAD_NAME")]


class ConverterV2(_RenameConverter):
    """VERSION 1 -> 2: the renames made before detectron2's public release.

    Besides the plain renames, the anchor settings moved from ``MODEL.RPN`` /
    ``MODEL.RETINANET`` into ``MODEL.ANCHOR_GENERATOR``: the meta-architecture decides which
    of the two old copies is kept.
    """

    RENAME = [
        ("MODEL.WEIGHT", "MODEL.WEIGHTS"),
        ("MODEL.PANOPTIC_FPN.SEMANTIC_LOSS_SCALE", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT"),
        ("MODEL.PANOPTIC_FPN.RPN_LOSS_SCALE", "MODEL.RPN.LOSS_WEIGHT"),
        ("MODEL.PANOPTIC_FPN.INSTANCE_LOSS_SCALE", "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT"),
        ("MODEL.PANOPTIC_FPN.COMBINE_ON", "MODEL.PANOPTIC_FPN.COMBINE.ENABLED"),
        ("MODEL.PANOPTIC_FPN.COMBINE_OVERLAP_THRESHOLD",
         "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH"),
        ("MODEL.PANOPTIC_FPN.COMBINE_STUFF_AREA_LIMIT",
         "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT"),
        ("MODEL.PANOPTIC_FPN.COMBINE_INSTANCES_CONFIDENCE_THRESHOLD",
         "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH"),
        ("MODEL.ROI_HEADS.SCORE_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
        ("MODEL.ROI_HEADS.NMS", "MODEL.ROI_HEADS.NMS_THRESH_TEST"),
        ("MODEL.RETINANET.INFERENCE_SCORE_THRESHOLD", "MODEL.RETINANET.SCORE_THRESH_TEST"),
        ("MODEL.RETINANET.INFERENCE_TOPK_CANDIDATES", "MODEL.RETINANET.TOPK_CANDIDATES_TEST"),
        ("MODEL.RETINANET.INFERENCE_NMS_THRESHOLD", "MODEL.RETINANET.NMS_THRESH_TEST"),
        ("TEST.DETECTIONS_PER_IMG", "TEST.DETECTIONS_PER_IMAGE"),
        ("TEST.AUG_ON", "TEST.AUG.ENABLED"),
        ("TEST.AUG_MIN_SIZES", "TEST.AUG.MIN_SIZES"),
        ("TEST.AUG_MAX_SIZE", "TEST.AUG.MAX_SIZE"),
        ("TEST.AUG_FLIP", "TEST.AUG.FLIP"),
    ]

    @classmethod
    def upgrade(cls, cfg: CN) -> None:
        super().upgrade(cfg)
        # v1 kept anchors in both heads; v2 has one ANCHOR_GENERATOR, filled from the head the
        # meta-architecture uses. The other copy is dropped.
        used, unused = (("RETINANET", "RPN") if cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
                        else ("RPN", "RETINANET"))
        _rename(cfg, f"MODEL.{used}.ANCHOR_ASPECT_RATIOS", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
        _rename(cfg, f"MODEL.{used}.ANCHOR_SIZES", "MODEL.ANCHOR_GENERATOR.SIZES")
        del cfg["MODEL"][unused]["ANCHOR_SIZES"]
        del cfg["MODEL"][unused]["ANCHOR_ASPECT_RATIOS"]
        del cfg["MODEL"]["RETINANET"]["ANCHOR_STRIDES"]

    @classmethod
    def downgrade(cls, cfg: CN) -> None:
        super().downgrade(cfg)
        _rename(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "MODEL.RPN.ANCHOR_ASPECT_RATIOS")
        _rename(cfg, "MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.RPN.ANCHOR_SIZES")
        cfg.MODEL.RETINANET.ANCHOR_ASPECT_RATIOS = cfg.MODEL.RPN.ANCHOR_ASPECT_RATIOS
        cfg.MODEL.RETINANET.ANCHOR_SIZES = cfg.MODEL.RPN.ANCHOR_SIZES
        cfg.MODEL.RETINANET.ANCHOR_STRIDES = []  # not read by any version
