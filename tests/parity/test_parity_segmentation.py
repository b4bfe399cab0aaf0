"""Parity of the segmentation outputs (semantic logits, panoptic segmentation) with the reference.

Complements ``test_parity.py`` (features, proposals, instances, losses) for the fixture folders
of the PanopticFPN / SemanticSegmentor kinds. Compared, with the README's tolerances:

* ``imgI/sem_seg``: the postprocessed (C, H, W) logits: max abs diff <= 1e-3 x max |ref|;
* ``imgI/sem_seg_argmax``: their argmax agrees on >= 99.9 % of the pixels;
* ``imgI/raw/sem_seg_logits_stride4``: the semantic head's stride-4 logits before upsampling
  (``sem_seg_head.predictor`` output, cropped to the stored size): same relative tolerance;
* ``imgI/panoptic_seg`` with ``meta.json`` ``summary.per_image[I].panoptic_segments_info``: the
  same segments in the same order (category_id, isthing; instance_id for things) and per
  segment mask IoU >= 0.99.

All images go through one batched ``model.eval(); model(inputs)`` call, as the reference did,
once with every inference optimisation of ``workbench.utils.perf`` on and once with all off.
Run with ``-s`` to print the achieved errors.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import workbench.modeling.meta_arch.panoptic_fpn  # noqa: F401  (registers PanopticFPN)
import workbench.modeling.meta_arch.semantic_seg  # noqa: F401  (registers SemanticSegmentor)
from reference import (
    OPT_MODES,
    assert_relative_map,
    build_reference_model,
    case_names,
    load_case,
    optimisations,
)

SEGMENTATION_ARCHS = ("PanopticFPN", "SemanticSegmentor")


def _segmentation_cases():
    names = []
    for name in case_names():
        try:
            arch = load_case(name).cfg.MODEL.META_ARCHITECTURE
        except Exception:  # test_parity.py reports folders that cannot load
            continue
        if arch in SEGMENTATION_ARCHS:
            names.append(name)
    return names


@functools.lru_cache(maxsize=None)
def _model(name):
    return build_reference_model(load_case(name))


@functools.lru_cache(maxsize=None)
def _run(name, mode):
    """Postprocessed outputs of the batched call and the stride-4 logits captured during it."""
    case = load_case(name)
    model = _model(name)
    predictor = getattr(model.sem_seg_head, "predictor", None)
    assert predictor is not None, f"{name}: sem_seg_head has no 'predictor' to read the stride-4 logits from"
    captured = []
    handle = predictor.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    try:
        with torch.no_grad(), optimisations(mode):
            outputs = model(case.model_inputs())
    finally:
        handle.remove()
    assert len(captured) == 1, f"{name}: the semantic predictor ran {len(captured)} times in one call"
    return outputs, captured[0]


def _report(name, what, errs):
    print(f"\n[{name}] {what}: " + ", ".join(f"{k}={v:.3g}" for k, v in errs.items()))


def test_segmentation_cases_exist():
    assert _segmentation_cases(), (
        f"No fixture folder of the kinds {SEGMENTATION_ARCHS} found among {case_names()}"
    )


@pytest.mark.parametrize("mode", list(OPT_MODES))
@pytest.mark.parametrize("name", _segmentation_cases())
def test_semantic_logits(name, mode):
    case = load_case(name)
    outputs, stride4 = _run(name, mode)
    errs = {"sem_seg rel": 0.0, "stride4 rel": 0.0, "min argmax agreement": 1.0}
    compared = 0
    for i in range(case.num_images):
        out = {k[len(f"img{i}/"):]: v for k, v in case.outputs.items() if k.startswith(f"img{i}/")}
        got = outputs[i]["sem_seg"].cpu().numpy()
        if "sem_seg" in out:
            errs["sem_seg rel"] = max(errs["sem_seg rel"], assert_relative_map(
                f"{name} img{i} sem_seg", got, out["sem_seg"], 1e-3))
            compared += 1
        if "sem_seg_argmax" in out:
            want = out["sem_seg_argmax"]
            assert got.shape[1:] == want.shape, f"{name} img{i}: sem_seg {got.shape} vs argmax {want.shape}"
            agree = float((got.argmax(0) == want).mean())
            errs["min argmax agreement"] = min(errs["min argmax agreement"], agree)
            assert agree >= 0.999, f"{name} img{i}: sem_seg argmax agrees on {agree:.4%} of the pixels"
            compared += 1
        if "raw/sem_seg_logits_stride4" in out:
            want = out["raw/sem_seg_logits_stride4"]
            c, h, w = want.shape
            assert h <= stride4.shape[2] and w <= stride4.shape[3], (
                f"{name} img{i}: stored stride-4 logits {want.shape} exceed the model's {tuple(stride4.shape[1:])}"
            )
            errs["stride4 rel"] = max(errs["stride4 rel"], assert_relative_map(
                f"{name} img{i} raw/sem_seg_logits_stride4", stride4[i, :, :h, :w].cpu().numpy(), want, 1e-3))
            compared += 1
    assert compared, f"{name}: no semantic segmentation outputs stored to compare"
    _report(name, f"semantic, {mode}", errs)


@pytest.mark.parametrize("mode", list(OPT_MODES))
@pytest.mark.parametrize("name", [n for n in _segmentation_cases()
                                  if load_case(n).cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"])
def test_panoptic_segmentation(name, mode):
    case = load_case(name)
    outputs, _ = _run(name, mode)
    per_image = case.meta["summary"]["per_image"]
    min_iou, max_score_err, checked = 1.0, 0.0, 0
    for i in range(case.num_images):
        key = f"img{i}/panoptic_seg"
        assert key in case.outputs, f"{name}: no {key} stored"
        want_seg = case.outputs[key]
        want_info = per_image[i]["panoptic_segments_info"]
        seg, info = outputs[i]["panoptic_seg"]
        seg = seg.cpu().numpy()
        assert seg.dtype == np.int32 and seg.shape == want_seg.shape, (
            f"{name} img{i}: panoptic_seg {seg.dtype} {seg.shape}, reference {want_seg.dtype} {want_seg.shape}"
        )
        got_kinds = [(s["category_id"], s["isthing"]) for s in info]
        want_kinds = [(s["category_id"], s["isthing"]) for s in want_info]
        assert got_kinds == want_kinds, f"{name} img{i}: segments {got_kinds}, reference {want_kinds}"
        for g, w in zip(info, want_info):
            if w["isthing"]:
                assert g["instance_id"] == w["instance_id"], f"{name} img{i}: segment {w['id']}: {g} vs {w}"
                max_score_err = max(max_score_err, abs(g["score"] - w["score"]))
            mask_g, mask_w = seg == g["id"], want_seg == w["id"]
            union = int((mask_g | mask_w).sum())
            iou = 1.0 if union == 0 else int((mask_g & mask_w).sum()) / union
            min_iou = min(min_iou, iou)
            assert iou >= 0.99, f"{name} img{i}: segment {w} has IoU {iou:.4f} with the reference"
        checked += 1
    assert max_score_err <= 1e-4, f"{name}: segment scores differ by {max_score_err:.3g}"
    _report(name, f"panoptic, {mode}", {"images": checked, "min segment IoU": min_iou, "thing scores": max_score_err})
