"""Loading weights whose names are not the model's own: Caffe2 / Detectron1 blobs, backbones.

Two steps, both detectron2's:

1. :func:`convert_c2_detectron_names` renames Caffe2 blob names by rules
   (``res2_0_branch2a_bn_s`` -> ``res2.0.conv1.norm.weight``, ``fpn_inner_res5_2_sum_w`` ->
   ``fpn_lateral5.weight``, ``fc6_w`` -> ``box_head.fc1.weight``, ...) and fixes the class
   layout of the box / mask predictors (Caffe2 puts background first and has box and mask
   outputs for it).
2. :func:`align_and_update_state_dicts` matches every model key to the **longest** checkpoint
   key that is a whole-component suffix of it (``backbone.bottom_up.res2.0.conv1.weight``
   matches ``res2.0.conv1.weight`` but ``roi_heads.mesh_head.whatever_conv1.weight`` does not
   match ``conv1.weight``), skips pairs whose shapes differ, and refuses a checkpoint key that
   would feed two model keys.

The renamed names are suffixes, not full names: the suffix matching of step 2 supplies the
model's prefixes (``backbone.bottom_up.``, ``roi_heads.``, ...).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "align_and_update_state_dicts",
    "convert_basic_c2_names",
    "convert_c2_detectron_names",
]

logger = logging.getLogger(__name__)

# A renaming rule: ("str", old, new) replaces every literal occurrence of ``old``;
# ("re", pattern, new) is ``re.sub(pattern, new, key)``. Rules run in order, each on the output
# of the previous one, so their order is part of the mapping. The patterns are detectron2's,
# unescaped dots included (``bn\.running.mean`` also matches ``bn.running_mean``).
_Rule = Tuple[str, str, str]

# Backbone (ResNet) blob names, after "_" -> "." (see convert_basic_c2_names).
_BASIC_RULES: Sequence[_Rule] = (
    ("re", r"\.b$", ".bias"),
    ("re", r"\.w$", ".weight"),
    # BatchNorm (as an affine channel op in Caffe2) and GroupNorm both become "norm".
    ("re", r"bn\.s$", "norm.weight"),
    ("re", r"bn\.bias$", "norm.bias"),
    ("re", r"bn\.rm", "norm.running_mean"),
    ("re", r"bn\.running.mean$", "norm.running_mean"),
    ("re", r"bn\.riv$", "norm.running_var"),
    ("re", r"bn\.running.var$", "norm.running_var"),
    ("re", r"bn\.gamma$", "norm.weight"),
    ("re", r"bn\.beta$", "norm.bias"),
    ("re", r"gn\.s$", "norm.weight"),
    ("re", r"gn\.bias$", "norm.bias"),
    # Stem. "stem." keeps "conv1" from matching the conv1 of every residual block.
    ("re", r"^res\.conv1\.norm\.", "conv1.norm."),
    ("re", r"^conv1\.", "stem.conv1."),
    # Residual blocks keep Caffe2's res2..res5 stage names.
    ("str", ".branch1.", ".shortcut."),
    ("str", ".branch2a.", ".conv1."),
    ("str", ".branch2b.", ".conv2."),
    ("str", ".branch2c.", ".conv3."),
    # DensePose heads.
    ("re", r"^body.conv.fcn", "body_conv_fcn"),
    ("str", "AnnIndex.lowres", "ann_index_lowres"),
    ("str", "Index.UV.lowres", "index_uv_lowres"),
    ("str", "U.lowres", "u_lowres"),
    ("str", "V.lowres", "v_lowres"),
)

# Detector heads, after the basic rules. The FPN convs are renamed by _fpn_name in between.
_HEAD_RULES_BEFORE_FPN: Sequence[_Rule] = (
    # RPN. With FPN, Caffe2 defines the shared RPN convs at level 2 ("fpn2") only.
    ("str", "conv.rpn.fpn2", "proposal_generator.rpn_head.conv"),
    ("str", "conv.rpn", "proposal_generator.rpn_head.conv"),
    ("str", "rpn.bbox.pred.fpn2", "proposal_generator.rpn_head.anchor_deltas"),
    ("str", "rpn.cls.logits.fpn2", "proposal_generator.rpn_head.objectness_logits"),
    ("str", "rpn.bbox.pred", "proposal_generator.rpn_head.anchor_deltas"),
    ("str", "rpn.cls.logits", "proposal_generator.rpn_head.objectness_logits"),
    # Fast R-CNN box head and predictor.
    ("re", r"^bbox\.pred", "bbox_pred"),
    ("re", r"^cls\.score", "cls_score"),
    ("re", r"^fc6\.", "box_head.fc1."),
    ("re", r"^fc7\.", "box_head.fc2."),
    ("re", r"^head\.conv", "box_head.conv"),  # 4conv1fc heads: head_conv1_w, head_conv1_gn_s
)
_HEAD_RULES_AFTER_FPN: Sequence[_Rule] = (
    # Mask head: StandardROIHeads ("_[mask]_fcn1") and Res5ROIHeads ("conv5_mask").
    ("str", ".[mask].fcn", "mask_head.mask_fcn"),
    ("re", r"^\.mask\.fcn", "mask_head.mask_fcn"),
    ("str", "mask.fcn.logits", "mask_head.predictor"),
    ("str", "conv5.mask", "mask_head.deconv"),
    # Keypoint head: its convs are simply "conv_fcnX".
    ("str", "conv.fcn", "roi_heads.keypoint_head.conv_fcn"),
    ("str", "kps.score.lowres", "roi_heads.keypoint_head.score_lowres"),
    ("str", "kps.score.", "roi_heads.keypoint_head.score."),
)


def _apply_rules(key: str, rules: Sequence[_Rule]) -> str:
    for kind, old, new in rules:
        key = key.replace(old, new) if kind == "str" else re.sub(old, new, key)
    return key


def convert_basic_c2_names(original_keys: Sequence[str]) -> List[str]:
    """Renames Caffe2 backbone blob names to detectron2's (suffixes of) parameter names.

    Args:
        original_keys: Caffe2 blob names, e.g. ``res2_0_branch2a_w``, ``res_conv1_bn_s``.

    Returns:
        One name per input, in order, e.g. ``res2.0.conv1.weight``, ``stem.conv1.norm.weight``.
    """
    out = []
    for key in original_keys:
        key = {"pred_b": "linear_b", "pred_w": "linear_w"}.get(key, key)  # classifier of ImageNet models
        out.append(_apply_rules(key.replace("_", "."), _BASIC_RULES))
    return out


def _fpn_name(name: str) -> str:
    """``fpn.inner.res2.2.sum.lateral.weight`` -> ``fpn_lateral2.weight``;
    ``fpn.res2.2.sum.weight`` -> ``fpn_output2.weight`` (a GroupNorm keeps its ``.norm``)."""
    parts = name.split(".")
    norm = ".norm" if "norm" in parts else ""
    if name.startswith("fpn.inner."):
        # e.g. ['fpn', 'inner', 'res2', '2', 'sum', 'lateral', 'weight']
        return f"fpn_lateral{int(parts[2][len('res'):])}{norm}.{parts[-1]}"
    if name.startswith("fpn.res"):
        # e.g. ['fpn', 'res2', '2', 'sum', 'weight']
        return f"fpn_output{int(parts[1][len('res'):])}{norm}.{parts[-1]}"
    return name


def _concat(parts: Sequence[Any]) -> Any:
    return torch.cat(list(parts)) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts)


def convert_c2_detectron_names(weights: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Renames a Caffe2 Detectron model's blobs to detectron2 names and fixes class layouts.

    Besides renaming (see module doc), the predictors are converted from Caffe2's class layout
    (background is class 0 and has its own box / mask outputs) to detectron2's (background is
    the last classification logit and has no box or mask output):

    - ``cls_score.*`` (K + 1 rows): row 0 moves to the end;
    - ``bbox_pred.*`` (4 (K + 1) rows): the first 4 rows are dropped;
    - ``mask_head.predictor.*`` (K + 1 output channels): the first is dropped.

    Args:
        weights: Caffe2 blob name -> array or tensor.

    Returns:
        (renamed weights, renamed name -> original Caffe2 name).

    Raises:
        ValueError: Two blobs are renamed to the same name.
    """
    logger.info("Renaming Caffe2 weights ...")
    original_keys = sorted(weights.keys())
    keys = convert_basic_c2_names(original_keys)
    keys = [_apply_rules(k, _HEAD_RULES_BEFORE_FPN) for k in keys]
    keys = [_fpn_name(k) for k in keys]
    keys = [_apply_rules(k, _HEAD_RULES_AFTER_FPN) for k in keys]

    if len(set(keys)) != len(keys):
        seen: Dict[str, str] = {}
        clashes = []
        for orig, new in zip(original_keys, keys):
            if new in seen:
                clashes.append(f"{seen[new]} and {orig} -> {new}")
            seen[new] = orig
        raise ValueError("Caffe2 blobs renamed to the same name: " + "; ".join(clashes))

    new_weights: Dict[str, Any] = {}
    new_to_original: Dict[str, str] = {}
    for orig, new in zip(original_keys, keys):
        new_to_original[new] = orig
        value = weights[orig]
        if new.startswith("bbox_pred.") or new.startswith("mask_head.predictor."):
            start = 4 if new.startswith("bbox_pred.") else 1
            new_weights[new] = value[start:]
            logger.info(
                "Dropped the background-class prediction of %s: shape %s -> %s.",
                new, tuple(value.shape), tuple(new_weights[new].shape),
            )
        elif new.startswith("cls_score."):
            new_weights[new] = _concat([value[1:], value[:1]])
            logger.info(
                "Moved the background-class row of %s from index 0 to index %d.",
                new, value.shape[0] - 1,
            )
        else:
            new_weights[new] = value
    return new_weights, new_to_original


def _is_suffix_match(model_key: str, ckpt_key: str) -> bool:
    # A whole dotted component suffix: "a.conv1.weight" matches "conv1.weight", while
    # "a.whatever_conv1.weight" does not.
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


def align_and_update_state_dicts(
    model_state_dict: Mapping[str, torch.Tensor],
    ckpt_state_dict: Mapping[str, Any],
    c2_conversion: bool = True,
) -> Dict[str, Any]:
    """Renames checkpoint keys to the model's own names by suffix matching.

    Each model key is matched to the longest checkpoint key that is a whole-component suffix
    of it (checkpoint names are assumed to be the shorter ones). Pairs whose shapes differ are
    skipped with a warning naming both keys. Checkpoint keys that match nothing are kept under
    their (converted) names, so the caller's ``load_state_dict`` reports them as unexpected.

    Args:
        model_state_dict: The model's ``state_dict()`` (only names and shapes are read).
        ckpt_state_dict: Checkpoint name -> tensor or array.
        c2_conversion: Rename with :func:`convert_c2_detectron_names` first.

    Returns:
        A new state dict: matched tensors under model names, plus the unmatched checkpoint
        entries.

    Raises:
        ValueError: One checkpoint key matches two model keys (ambiguous).
    """
    model_keys = sorted(model_state_dict.keys())
    if c2_conversion:
        ckpt_state_dict, original_keys = convert_c2_detectron_names(ckpt_state_dict)
    else:
        original_keys = {k: k for k in ckpt_state_dict.keys()}
    ckpt_keys = sorted(ckpt_state_dict.keys())

    # A suffix match shares the last dotted component, so only those candidates are compared.
    by_last: Dict[str, List[str]] = defaultdict(list)
    for k in ckpt_keys:
        by_last[k.rsplit(".", 1)[-1]].append(k)

    matched: Dict[str, str] = {}  # checkpoint key -> model key
    result: Dict[str, Any] = {}
    for key_model in model_keys:
        candidates = [k for k in by_last.get(key_model.rsplit(".", 1)[-1], ())
                      if _is_suffix_match(key_model, k)]
        if not candidates:
            continue
        # Two different suffixes of one string have different lengths: no ties.
        key_ckpt = max(candidates, key=len)
        value = ckpt_state_dict[key_ckpt]
        shape_model = tuple(model_state_dict[key_model].shape)
        shape_ckpt = tuple(value.shape)
        if shape_model != shape_ckpt:
            logger.warning(
                "Shape of %s in checkpoint is %s, while shape of %s in model is %s. %s will not "
                "be loaded. Please double check and see if this is desired.",
                original_keys[key_ckpt], shape_ckpt, key_model, shape_model,
                original_keys[key_ckpt],
            )
            continue
        if key_ckpt in matched:
            raise ValueError(
                f"Ambiguity found for {original_keys[key_ckpt]} in checkpoint: it matches at "
                f"least two keys in the model ({matched[key_ckpt]} and {key_model}). Cannot "
                "match one checkpoint key to multiple keys in the model."
            )
        result[key_model] = value
        matched[key_ckpt] = key_model

    if not matched:
        logger.warning("No weights in checkpoint matched with model.")
        return dict(ckpt_state_dict)
    logger.info(_matched_table(matched, original_keys, model_state_dict))

    for k in ckpt_keys:
        if k not in matched:
            result[k] = ckpt_state_dict[k]
    return result


# ------------------------------------------------------------------------- logging the matches
def _matched_table(matched: Mapping[str, str], original_keys: Mapping[str, str],
                   model_state_dict: Mapping[str, torch.Tensor]) -> str:
    """A table of model names, the checkpoint names they were loaded from, and shapes.

    Parameters of one submodule whose checkpoint names share a prefix are folded into one
    row, e.g. ``res2.0.conv1.norm.* | res2_0_branch2a_bn_{b,riv,rm,s} | (64,) (64,) ...``.
    """
    from tabulate import tabulate

    model_keys = sorted(matched.values())
    origin = {m: original_keys[c] for c, m in matched.items()}
    common = _common_component_prefix(model_keys)
    groups = _group_keys_by_module(model_keys, origin)
    rows, done = [], set()
    for key in model_keys:
        if key in done:
            continue
        if key in groups:
            group = groups[key]
            done.update(group)
            rows.append((
                _common_component_prefix([k[len(common):] for k in group]) + "*",
                _fold_names([origin[k] for k in group]),
                " ".join(str(tuple(model_state_dict[k].shape)).replace(" ", "") for k in group),
            ))
        else:
            rows.append((key[len(common):], origin[key], str(tuple(model_state_dict[key].shape))))
    table = tabulate(rows, tablefmt="pipe", headers=["Names in Model", "Names in Checkpoint", "Shapes"])
    where = f"submodule {common[:-1]}" if common else "model"
    return f"Following weights matched with {where}:\n{table}"


def _group_keys_by_module(keys: Sequence[str], origin: Mapping[str, str]) -> Dict[str, List[str]]:
    """Model key -> all matched keys of the same submodule, when their checkpoint names share a
    prefix (otherwise the keys are listed one per row)."""
    prefixes = sorted({k[: k.rfind(".") + 1] for k in keys if "." in k}, key=len)
    out: Dict[str, List[str]] = {}
    for prefix in prefixes:
        group = [k for k in keys if k.startswith(prefix)]
        if len(group) <= 1 or not _common_char_prefix([origin[k] for k in group]):
            continue
        for k in group:
            out.setdefault(k, group)
    return out


def _common_component_prefix(names: Sequence[str]) -> str:
    """``["abc.zfg", "abc.zef"] -> "abc."`` (whole dotted components, with the final dot)."""
    split = [n.split(".") for n in names]
    lo, hi = min(split), max(split)
    common = []
    for a, b in zip(lo, hi):
        if a != b:
            break
        common.append(a)
    return ".".join(common) + "." if common else ""


def _common_char_prefix(names: Sequence[str]) -> str:
    lo, hi = min(names), max(names)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


def _fold_names(names: Sequence[str]) -> str:
    """``["res2_bn_b", "res2_bn_s"] -> "res2_bn_{b,s}"``."""
    lcp = _common_char_prefix(names)
    folded = lcp + "{" + ",".join(n[len(lcp):] for n in names) + "}"
    folded = folded.replace("bn_{beta,running_mean,running_var,gamma}", "bn_*")
    return folded.replace("bn_beta,bn_running_mean,bn_running_var,bn_gamma", "bn_*")
