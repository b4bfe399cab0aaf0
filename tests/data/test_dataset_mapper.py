"""DatasetMapper on COCO-style dicts: polygons, RLE, keypoints, flips, crowd, label maps."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from workbench.config import get_cfg
from workbench.data import DatasetCatalog, DatasetMapper, detection_utils as utils
from workbench.data import transforms as T
from workbench.structures import BitMasks, BoxMode, PolygonMasks, polygons_to_bitmask

FLIP = np.array([1, 0, 3, 2])  # left_top <-> right_top, left_bottom <-> right_bottom


def _mapper(augs, mask_format="bitmask", is_train=True):
    return DatasetMapper(is_train=is_train, augmentations=augs, image_format="BGR", use_instance_mask=True,
                         use_keypoint=True, instance_mask_format=mask_format, keypoint_hflip_indices=FLIP)


def test_resize_polygons_rle_keypoints(coco_dataset):
    d = DatasetCatalog.get(coco_dataset["name"])[0]  # 40 x 60, square + blob + crowd
    out = _mapper([T.ResizeShortestEdge(80, 1000)])(d)  # exactly x2
    assert out["image"].shape == (3, 80, 120) and out["image"].dtype == torch.uint8
    rgb = np.asarray(Image.open(d["file_name"]))
    bgr_resized = np.asarray(Image.fromarray(rgb[:, :, ::-1].copy()).resize((120, 80), Image.BILINEAR))
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), bgr_resized)
    assert (out["height"], out["width"]) == (40, 60)  # outputs come back at the original size

    inst = out["instances"]
    assert len(inst) == 2  # the crowd annotation is dropped
    assert inst.gt_classes.tolist() == [0, 1]
    torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[4.0, 6, 28, 26], [92, 56, 116, 76]]))
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (2, 80, 120)
    # Polygon mask: rasterised from the scaled polygon.
    expected_square = polygons_to_bitmask([np.array([4, 6, 28, 6, 28, 26, 4, 26], float)], 80, 120)
    np.testing.assert_array_equal(inst.gt_masks.tensor[0].numpy(), expected_square)
    # RLE mask: decoded, then resized with nearest neighbour.
    blob = mask_util.decode(d["annotations"][1]["segmentation"])
    expected_blob = np.asarray(Image.fromarray(blob).resize((120, 80), Image.NEAREST)).astype(bool)
    np.testing.assert_array_equal(inst.gt_masks.tensor[1].numpy(), expected_blob)
    # Keypoints scale with the image (continuous coordinates).
    kp = inst.gt_keypoints.tensor
    assert kp.shape == (2, 4, 3)
    torch.testing.assert_close(kp[0, :, :2], torch.tensor([[5.0, 7], [27, 7], [5, 25], [27, 25]]))
    assert kp[..., 2].eq(2).all()
    # The label map follows the image with nearest-neighbour sampling.
    label = np.asarray(Image.open(d["sem_seg_file_name"]))
    expected_label = np.asarray(Image.fromarray(label).resize((120, 80), Image.NEAREST))
    assert out["sem_seg"].dtype == torch.int64
    np.testing.assert_array_equal(out["sem_seg"].numpy(), expected_label)


def test_horizontal_flip_swaps_left_and_right_keypoints(coco_dataset):
    d = DatasetCatalog.get(coco_dataset["name"])[0]
    plain = _mapper([T.ResizeShortestEdge(40, 1000)])(d)
    flipped = _mapper([T.ResizeShortestEdge(40, 1000), T.RandomFlip(prob=1.0)])(d)
    w = 60
    np.testing.assert_array_equal(flipped["image"].numpy(), plain["image"].flip(-1).numpy())
    np.testing.assert_array_equal(flipped["sem_seg"].numpy(), plain["sem_seg"].flip(-1).numpy())
    b, fb = plain["instances"].gt_boxes.tensor, flipped["instances"].gt_boxes.tensor
    torch.testing.assert_close(fb, torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1))
    np.testing.assert_array_equal(flipped["instances"].gt_masks.tensor.numpy(),
                                  plain["instances"].gt_masks.tensor.flip(-1).numpy())
    kp, fkp = plain["instances"].gt_keypoints.tensor, flipped["instances"].gt_keypoints.tensor
    # Keypoint i of the flipped image is the mirror image of keypoint FLIP[i]: "left_top" is
    # still the top-left corner of the (mirrored) object.
    torch.testing.assert_close(fkp[:, :, 0], w - kp[:, FLIP, 0])
    torch.testing.assert_close(fkp[:, :, 1], kp[:, FLIP, 1])
    left_top, right_top = fkp[0, 0], fkp[0, 1]
    assert left_top[0] < right_top[0]


def test_vertical_flip_keeps_keypoint_order(coco_dataset):
    d = DatasetCatalog.get(coco_dataset["name"])[0]
    plain = _mapper([T.ResizeShortestEdge(40, 1000)])(d)
    flipped = _mapper([T.ResizeShortestEdge(40, 1000), T.RandomFlip(prob=1.0, horizontal=False, vertical=True)])(d)
    kp, fkp = plain["instances"].gt_keypoints.tensor, flipped["instances"].gt_keypoints.tensor
    torch.testing.assert_close(fkp[:, :, 1], 40 - kp[:, :, 1])
    torch.testing.assert_close(fkp[:, :, 0], kp[:, :, 0])


def test_polygon_format(coco_dataset):
    d = DatasetCatalog.get(coco_dataset["name"])[0]
    # Polygon masks need polygon annotations: RLE in the data is reported clearly.
    with pytest.raises(ValueError, match=r"MASK_FORMAT is 'polygon' but instance \d+ has a \w+ segmentation "
                                         r"\(RLE.*set INPUT.MASK_FORMAT bitmask.*Cityscapes"):
        _mapper([T.ResizeShortestEdge(40, 1000)], mask_format="polygon")(d)
    d["annotations"] = [a for a in d["annotations"] if isinstance(a["segmentation"], list)]
    out = _mapper([T.ResizeShortestEdge(80, 1000)], mask_format="polygon")(d)
    masks = out["instances"].gt_masks
    assert isinstance(masks, PolygonMasks)
    np.testing.assert_allclose(masks.polygons[0][0], [4, 6, 28, 6, 28, 26, 4, 26])


def test_mapper_does_not_modify_its_input_and_test_mode(coco_dataset):
    d = DatasetCatalog.get(coco_dataset["name"])[1]
    before = repr(d)
    out = _mapper([T.ResizeShortestEdge(60, 1000)], is_train=False)(d)
    assert repr(d) == before
    assert "annotations" not in out and "instances" not in out
    assert out["image"].shape == (3, 100, 60)


def test_mapper_from_cfg(coco_dataset):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.MASK_ON", True, "MODEL.KEYPOINT_ON", True, "INPUT.MASK_FORMAT", "bitmask",
                         "DATASETS.TRAIN", (coco_dataset["name"],), "INPUT.MIN_SIZE_TRAIN", (32, 48),
                         "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "INPUT.MAX_SIZE_TRAIN", 100])
    mapper = DatasetMapper(cfg, is_train=True)
    np.testing.assert_array_equal(mapper.keypoint_hflip_indices, FLIP)
    resize, flip = mapper.augmentations.augs
    assert isinstance(resize, T.ResizeShortestEdge) and resize.short_edge_length == (32, 48) and resize.is_range
    assert isinstance(flip, T.RandomFlip) and flip.horizontal
    test_mapper = DatasetMapper(cfg, is_train=False)
    (test_resize,) = test_mapper.augmentations.augs
    assert test_resize.short_edge_length == (800, 800)


def test_keypoints_outside_the_image_become_unlabelled():
    kp = [5.0, 5.0, 2, 25.0, 5.0, 2, 5.0, 5.0, 0]
    out = utils.transform_keypoint_annotations(kp, [T.CropTransform(0, 0, 20, 20)], (20, 20))
    np.testing.assert_array_equal(out, [[5, 5, 2], [0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="keypoint_hflip_indices"):
        utils.transform_keypoint_annotations(kp, [T.HFlipTransform(20)], (20, 20))


def test_filter_empty_instances_and_boxes_clipped():
    anno = {"bbox": [-5.0, 2.0, 30.0, 10.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    anno = utils.transform_instance_annotations(anno, [T.NoOpTransform()], (8, 20))
    np.testing.assert_allclose(anno["bbox"], [0, 2, 20, 8])
    empty = {"bbox": [3.0, 3.0, 3.0, 9.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}
    inst = utils.annotations_to_instances([anno, empty], (8, 20))
    kept = utils.filter_empty_instances(inst)
    assert kept.gt_classes.tolist() == [0]


def test_crop_clips_polygons_and_recomputes_boxes():
    anno = {"bbox": [0.0, 0.0, 10.0, 10.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0,
            "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}
    anno = utils.transform_instance_annotations(anno, [T.CropTransform(4, 2, 10, 10)], (10, 10))
    inst = utils.annotations_to_instances([anno], (10, 10))
    torch.testing.assert_close(inst.gt_masks.get_bounding_boxes().tensor, torch.tensor([[0.0, 0, 6, 8]]))
    torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[0.0, 0, 6, 8]]))
