"""Checks of config values that no model or loader can work with.

Types are already checked when a config is merged; this module checks values:
:func:`check_config_values` raises :class:`ConfigValueError` naming the dotted key, the value
and what is expected. :func:`~workbench.modeling.build_model` checks every key of
:data:`CHECKED_KEYS`; ``build_detection_train_loader`` / ``build_detection_test_loader``
(with a cfg) and ``DatasetMapper.from_config`` check the ``INPUT.*`` keys (and the train loader
``SOLVER.IMS_PER_BATCH``).

Values that detectron2 gives a meaning are legal: ``INPUT.MIN_SIZE_TEST: 0`` / a 0 in
``INPUT.MIN_SIZE_TRAIN`` (no resizing), a negative ``TEST.DETECTIONS_PER_IMAGE`` (keep all),
``SEED: -1`` (random seed), ``SOLVER.CLIP_GRADIENTS`` and the like are not checked. Every value
used by a config of the model zoo passes. Keys absent from the config are skipped.
"""

from __future__ import annotations

import collections.abc
import math
import numbers
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

__all__ = ["ConfigValueError", "CHECKED_KEYS", "INPUT_KEYS", "check_config_values"]

# The formats read_image / convert_PIL_to_numpy can produce (detectron2: a PIL image mode,
# "BGR" or "YUV-BT.601").
_INPUT_FORMATS = ("BGR", "RGB", "L", "YUV-BT.601", "1", "P", "RGBA", "CMYK", "I", "F", "LA",
                  "HSV", "YCbCr")


class ConfigValueError(ValueError):
    """A config value no model or loader can work with; the message names the dotted key."""



def _is_sequence(v: object) -> bool:
    """A list or tuple, or an omegaconf ListConfig (a cfg given as a DictConfig)."""
    return isinstance(v, collections.abc.Sequence) and not isinstance(v, (str, bytes))

def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _int_at_least(low: int) -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= low, f"an integer >= {low}")


def _in_unit_interval() -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]")


def _sizes_at_least_zero(v: Any) -> bool:
    values = v if _is_sequence(v) else [v]
    return len(values) > 0 and all(_is_number(x) and x >= 0 for x in values)


def _positive_numbers(v: Any) -> bool:
    return _is_sequence(v) and len(v) > 0 and all(_is_number(x) and x > 0 for x in v)


def _numbers(v: Any) -> bool:
    return _is_sequence(v) and len(v) > 0 and all(_is_number(x) for x in v)


# key -> (check, what is expected)
_RULES: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "MODEL.ROI_HEADS.NUM_CLASSES": _int_at_least(1),
    "MODEL.RETINANET.NUM_CLASSES": _int_at_least(1),
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": _int_at_least(1),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": _int_at_least(1),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": _int_at_least(1),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": _int_at_least(1),
    "MODEL.RPN.POST_NMS_TOPK_TEST": _int_at_least(1),
    "MODEL.RPN.NMS_THRESH": _in_unit_interval(),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": _in_unit_interval(),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": _in_unit_interval(),
    "MODEL.RETINANET.SCORE_THRESH_TEST": _in_unit_interval(),
    "MODEL.RETINANET.NMS_THRESH_TEST": _in_unit_interval(),
    "MODEL.PIXEL_MEAN": (_numbers, "a non-empty list of finite numbers (one per input channel)"),
    "MODEL.PIXEL_STD": (_positive_numbers,
                        "a non-empty list of numbers > 0 (one per input channel; pixels are "
                        "divided by them)"),
    "SOLVER.IMS_PER_BATCH": _int_at_least(1),
    "INPUT.FORMAT": (lambda v: v in _INPUT_FORMATS, f"one of {_INPUT_FORMATS}"),
    "INPUT.MIN_SIZE_TEST": (_sizes_at_least_zero, "a size >= 0 (0: no resizing)"),
    "INPUT.MIN_SIZE_TRAIN": (_sizes_at_least_zero, "a non-empty list of sizes >= 0 (0: no resizing)"),
    "INPUT.MAX_SIZE_TEST": (lambda v: _is_number(v) and v > 0, "a size > 0"),
    "INPUT.MAX_SIZE_TRAIN": (lambda v: _is_number(v) and v > 0, "a size > 0"),
}

#: Every key :func:`check_config_values` checks by default (the ones build_model checks).
CHECKED_KEYS: Tuple[str, ...] = tuple(_RULES)
#: The keys the data loaders and DatasetMapper check.
INPUT_KEYS: Tuple[str, ...] = tuple(k for k in _RULES if k.startswith("INPUT."))

_MISSING = object()


def _lookup(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return _MISSING
    return node


def check_config_values(cfg: Any, keys: Optional[Iterable[str]] = None) -> None:
    """Raises :class:`ConfigValueError` if a value of ``cfg`` is impossible.

    Args:
        cfg: A :class:`~workbench.config.CfgNode` (or nested mapping).
        keys: The dotted keys to check, each one of :data:`CHECKED_KEYS`; default all of them.
            ``MODEL.PIXEL_MEAN`` and ``MODEL.PIXEL_STD`` are also checked to have the same
            length when both are checked.

    Raises:
        ConfigValueError: names the first bad key, its value and what is expected.
    """
    keys = CHECKED_KEYS if keys is None else tuple(keys)
    for key in keys:
        if key not in _RULES:
            raise ValueError(f"check_config_values does not know key {key!r}; "
                             f"it checks {CHECKED_KEYS}.")
        value = _lookup(cfg, key)
        if value is _MISSING:
            continue
        ok, expected = _RULES[key]
        if not ok(value):
            raise ConfigValueError(f"Config key {key} is {value!r}, expected {expected}.")
    if "MODEL.PIXEL_MEAN" in keys and "MODEL.PIXEL_STD" in keys:
        mean, std = _lookup(cfg, "MODEL.PIXEL_MEAN"), _lookup(cfg, "MODEL.PIXEL_STD")
        if mean is not _MISSING and std is not _MISSING and len(mean) != len(std):
            raise ConfigValueError(
                f"Config keys MODEL.PIXEL_MEAN ({len(mean)} values: {list(mean)}) and "
                f"MODEL.PIXEL_STD ({len(std)} values: {list(std)}) must have the same length, "
                "one value per input channel.")
