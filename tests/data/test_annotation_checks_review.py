"""Review fixes of the annotation checks: torch tensors in dataset dicts are accepted (as
detectron2's BoxMode.convert accepts them), and compressed RLE strings are decoded with numpy,
exactly as pycocotools reads them."""

from __future__ import annotations

import re

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from workbench.data.annotation_checks import AnnotationError, rle_problem, rle_string_counts
from workbench.data.detection_utils import annotations_to_instances, transform_instance_annotations
from workbench.structures import BoxMode


def _python_rle_string_counts(counts: str):
    """pycocotools' rleFrString, one character at a time (the reference)."""
    out, pos = [], 0
    while pos < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[pos]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            pos += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def test_rle_string_counts_matches_pycocotools_on_random_masks():
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 7), (5, 1), (0, 4)] + [tuple(rng.integers(1, 120, 2)) for _ in range(200)]
    for i, (h, w) in enumerate(shapes):
        mode = i % 4
        if mode == 0:
            mask = rng.random((h, w)) < rng.random()
        elif mode == 1:
            mask = np.zeros((h, w), bool)
        elif mode == 2:
            mask = np.ones((h, w), bool)
        else:  # long runs: numbers of several 5-bit groups, negative differences
            mask = np.zeros((h, w), bool)
            mask[h // 3: h - h // 4, w // 5: w - 1] = True
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        text = rle["counts"].decode("ascii")
        runs = rle_string_counts(text)
        assert runs.dtype == np.int64
        assert runs.tolist() == _python_rle_string_counts(text), (h, w)
        assert int(runs.sum()) == h * w
        assert int(runs[1::2].sum()) == int(mask_util.area(rle)) == int(mask.sum())
        # The runs are the uncompressed RLE pycocotools compresses back to the same string.
        again = mask_util.frPyObjects({"counts": runs.tolist(), "size": [int(h), int(w)]}, int(h), int(w))
        assert again["counts"] == rle["counts"]
        assert rle_problem({"size": [int(h), int(w)], "counts": text}) is None
        assert rle_problem({"size": [int(h), int(w)], "counts": rle["counts"]}) is None  # bytes


def test_large_runs_and_negative_differences():
    # Runs of a 2000 x 3000 mask need several 5-bit groups; differences go both ways.
    mask = np.zeros((2000, 3000), np.uint8)
    mask[100:1900, 5:2990] = 1
    mask[0, 2999] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    runs = rle_string_counts(rle["counts"].decode())
    assert runs.tolist() == _python_rle_string_counts(rle["counts"].decode())
    assert int(runs[1::2].sum()) == int(mask.sum())


@pytest.mark.parametrize("counts, problem", [
    ("0", r"run lengths sum to 0"),
    ("P", r"ends in the middle of a run length"),            # 0x20 set on the last character
    ("0" * 5 + "P", r"ends in the middle of a run length"),
    ("PPPPPPPP0", r"9 characters long"),                      # over 7 groups: not a 32-bit count
    ("@", r"negative run length"),                            # 0x10 alone: the sign, -16
])
def test_corrupt_compressed_strings(counts, problem):
    msg = rle_problem({"size": [4, 5], "counts": counts})
    assert msg is not None
    assert re.search(problem, msg), msg


def test_a_truncated_compressed_string_of_a_real_mask():
    mask = np.zeros((30, 40), np.uint8)
    mask[3:20, 5:30] = 1
    text = mask_util.encode(np.asfortranarray(mask))["counts"].decode()
    assert rle_problem({"size": [30, 40], "counts": text}) is None
    assert rle_problem({"size": [30, 40], "counts": text[:-1]}) is not None
    assert rle_problem({"size": [30, 41], "counts": text}) is not None


def test_torch_tensor_bbox_and_polygon_are_accepted():
    ann = {"bbox": torch.tensor([10.0, 10.0, 20.0, 20.0]), "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
           "segmentation": [torch.tensor([10.0, 10.0, 30.0, 10.0, 30.0, 30.0])]}
    instances = annotations_to_instances([dict(ann)], (64, 64))
    assert instances.gt_boxes.tensor.tolist() == [[10.0, 10.0, 30.0, 30.0]]
    out = transform_instance_annotations(dict(ann), [], (64, 64))
    assert np.asarray(out["bbox"]).tolist() == [10.0, 10.0, 30.0, 30.0]
    assert [p.tolist() for p in out["segmentation"]] == [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0]]
    xyxy = {"bbox": torch.tensor([1, 2, 5, 6], dtype=torch.int64), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    assert np.asarray(transform_instance_annotations(xyxy, [], (64, 64))["bbox"]).tolist() == [1, 2, 5, 6]


@pytest.mark.parametrize("bbox, problem", [
    (torch.tensor([10.0, 10.0, -20.0, 20.0]), r"bbox \[10.0, 10.0, -20.0, 20.0\] has a negative width"),
    (torch.tensor([10.0, float("nan"), 20.0, 20.0]), r"is not 4 finite numbers"),
    (torch.tensor([10.0, 10.0, 20.0]), r"is not 4 finite numbers"),
    (torch.zeros(2, 4), r"is not 4 finite numbers"),
])
def test_bad_torch_tensor_bboxes_are_still_refused(bbox, problem):
    with pytest.raises(AnnotationError, match=problem):
        transform_instance_annotations({"bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}, [], (64, 64))
