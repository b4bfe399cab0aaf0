"""Steps of the detection data pipeline: read an image, transform its annotations, turn them
into the :class:`~workbench.structures.Instances` that models train on.

Shapes: H x W the image after augmentation; N instances; K keypoints per instance. Boxes
are XYXY absolute pixels once transformed; keypoints are (x, y, v) with x, y in pixels where
a pixel's centre is at (i + 0.5, j + 0.5) (COCO's integer indices + 0.5, see
:func:`~workbench.data.datasets.load_coco_json`) and v = 0 "not labelled", 1 "labelled but
not visible", 2 "visible".
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from workbench.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    Instances,
    Keypoints,
    PolygonMasks,
    polygons_to_bitmask,
)

from . import transforms as T
from .annotation_checks import AnnotationError, bbox_problem, polygon_problem, rle_problem
from .catalog import MetadataCatalog

__all__ = [
    "get_fed_loss_cls_weights",
    "AnnotationError", "SizeMismatchError", "convert_PIL_to_numpy", "convert_image_to_rgb", "read_image",
    "check_image_size", "transform_proposals", "transform_instance_annotations",
    "transform_keypoint_annotations", "annotations_to_instances", "filter_empty_instances",
    "create_keypoint_hflip_indices", "gen_crop_transform_with_instance",
    "check_metadata_consistency", "build_augmentation", "build_transform_gen",
]


class SizeMismatchError(ValueError):
    """The image read from disk does not have the size its dataset dict says."""


_FORMATS = ("BGR", "RGB", "L", "YUV-BT.601", "1", "P", "RGBA", "CMYK", "I", "F", "LA", "HSV", "YCbCr")

# https://en.wikipedia.org/wiki/YUV#SDTV_with_BT.601
_M_RGB2YUV = [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]
_M_YUV2RGB = [[1.0, 0.0, 1.13983], [1.0, -0.39465, -0.58060], [1.0, 2.03211, 0.0]]


def convert_PIL_to_numpy(image: Image.Image, format: Optional[str]) -> np.ndarray:
    """A PIL image -> (H, W, C) numpy array in ``format``.

    Args:
        format: A PIL mode, ``"BGR"`` or ``"YUV-BT.601"``; ``None`` keeps the file's mode.
            ``"L"`` gives (H, W, 1).
    """
    if format is not None:
        conversion = "RGB" if format in ("BGR", "YUV-BT.601") else format
        image = image.convert(conversion)
    arr = np.asarray(image)
    if format == "L":
        arr = np.expand_dims(arr, -1)
    elif format == "BGR":
        arr = arr[:, :, ::-1]  # RGB -> BGR
    elif format == "YUV-BT.601":
        arr = np.dot(arr / 255.0, np.array(_M_RGB2YUV).T)
    return arr


def convert_image_to_rgb(image: Union[np.ndarray, torch.Tensor], format: str) -> np.ndarray:
    """An (H, W, C) image in ``format`` -> (H, W, 3) RGB numpy array (e.g. to display it)."""
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if format == "BGR":
        return image[:, :, [2, 1, 0]]
    if format == "YUV-BT.601":
        return (np.dot(image, np.array(_M_YUV2RGB).T) * 255.0)
    if format == "L":
        image = image[:, :, 0]
    image = image.astype(np.uint8)
    return np.asarray(Image.fromarray(image, mode=format).convert("RGB"))


# https://www.exiv2.org/tags.html
_EXIF_ORIENT = 274  # exif 'Orientation' tag


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotates / flips ``image`` by its EXIF orientation tag, as detectron2's function of this
    name does (a broken EXIF block leaves the image as stored)."""
    if not hasattr(image, "getexif"):
        return image
    try:
        exif = image.getexif()
    except Exception:  # https://github.com/facebookresearch/detectron2/issues/1885
        exif = None
    if exif is None:
        return image
    method = {
        2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM,
        5: Image.TRANSPOSE, 6: Image.ROTATE_270, 7: Image.TRANSVERSE, 8: Image.ROTATE_90,
    }.get(exif.get(_EXIF_ORIENT))
    return image.transpose(method) if method is not None else image


_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")  # more than 8 bits per value


def read_image(file_name: str, format: Optional[str] = None) -> np.ndarray:
    """Reads an image file into an (H, W, C) (or (H, W) for format=None of a grey file) array.

    The EXIF orientation tag is applied, as detectron2 does. A CMYK file is converted by PIL
    (``"RGB"`` / ``"BGR"``: 3 channels; ``format=None`` keeps the 4 CMYK channels), as in
    detectron2.

    16-bit (and 32-bit integer / float) grey images: ``format=None`` returns their values as
    stored (uint16 / int32 / float32). Converting one to an 8-bit format ("BGR", "RGB", "L",
    ...) keeps the values when they all lie in [0, 255] (label maps, as today); otherwise it
    raises instead of clipping (PIL turns every value above 255 into 255). It does not rescale
    (divide by 257): the same reader loads label maps, whose values must not be scaled. Read
    such a photo with ``format=None`` and scale it yourself, e.g. ``(arr // 257).astype(np.uint8)``.

    Args:
        file_name: Path of the image.
        format: ``"BGR"`` (cfg.INPUT.FORMAT default), ``"RGB"``, ``"L"`` (gives (H, W, 1)),
            ``"YUV-BT.601"``, another PIL mode, or ``None`` for the file's own mode.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not an image PIL can read, is truncated or corrupt, or holds
            values that the 8-bit ``format`` cannot represent; the message names the file.
    """
    with open(file_name, "rb") as f:
        try:
            image = Image.open(f)
        except Image.UnidentifiedImageError as e:
            raise ValueError(f"Cannot read image file '{file_name}': it is not an image format "
                             "PIL can read (JPEG, PNG, ...).") from e
        try:
            image.load()  # decode now: a truncated or corrupt file fails here
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"Cannot read image file '{file_name}': it is truncated or corrupt "
                             f"({e}).") from e
        image = _apply_exif_orientation(image)
        if format is not None and image.mode in _WIDE_MODES and format not in ("I", "F"):
            lo, hi = image.getextrema()
            if lo < 0 or hi > 255:
                raise ValueError(
                    f"Image file '{file_name}' is a {image.mode} (16/32-bit) image with values in "
                    f"[{lo}, {hi}]; converting it to the 8-bit format {format!r} would clip them "
                    "to [0, 255]. Read it with format=None (the values as stored) and scale it "
                    "yourself, e.g. (arr // 257).astype(np.uint8) for 16-bit.")
        return convert_PIL_to_numpy(image, format)


def check_image_size(dataset_dict: Dict[str, Any], image: np.ndarray) -> None:
    """Raises if ``image`` does not have the dict's "width"/"height"; fills them in if absent."""
    if "width" in dataset_dict or "height" in dataset_dict:
        image_wh = (image.shape[1], image.shape[0])
        expected_wh = (dataset_dict["width"], dataset_dict["height"])
        if image_wh != expected_wh:
            where = f" for image {dataset_dict['file_name']}" if "file_name" in dataset_dict else ""
            raise SizeMismatchError(
                f"Mismatched image shape{where}, got (W, H) = {image_wh}, expect {expected_wh}. "
                "Please check the width/height in your annotation."
            )
    dataset_dict.setdefault("width", image.shape[1])
    dataset_dict.setdefault("height", image.shape[0])


def transform_proposals(dataset_dict: Dict[str, Any], image_shape: Tuple[int, int],
                        transforms: T.TransformList, *, proposal_topk: int,
                        min_box_size: float = 0) -> None:
    """Moves precomputed proposals ("proposal_boxes", "proposal_objectness_logits",
    "proposal_bbox_mode") of ``dataset_dict`` into an ``Instances`` under "proposals"."""
    if "proposal_boxes" not in dataset_dict:
        return
    boxes = transforms.apply_box(BoxMode.convert(
        dataset_dict.pop("proposal_boxes"), dataset_dict.pop("proposal_bbox_mode"), BoxMode.XYXY_ABS))
    boxes = Boxes(boxes)
    objectness_logits = torch.as_tensor(dataset_dict.pop("proposal_objectness_logits").astype("float32"))
    boxes.clip(image_shape)
    keep = boxes.nonempty(threshold=min_box_size)
    proposals = Instances(image_shape)
    proposals.proposal_boxes = boxes[keep][:proposal_topk]
    proposals.objectness_logits = objectness_logits[keep][:proposal_topk]
    dataset_dict["proposals"] = proposals


def transform_instance_annotations(annotation: Dict[str, Any],
                                   transforms: Union[T.Transform, Sequence[T.Transform]],
                                   image_size: Tuple[int, int], *,
                                   keypoint_hflip_indices: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Applies ``transforms`` to one instance's box, segmentation and keypoints, in place.

    The box becomes XYXY_ABS clipped to the image; polygons stay polygons (list of flat
    arrays); an RLE ``segmentation`` (dict) is decoded and becomes an (H, W) uint8 mask;
    keypoints become a (K, 3) array (see :func:`transform_keypoint_annotations`).

    Args:
        annotation: One instance of a dataset dict's "annotations".
        transforms: What the image went through.
        image_size: (H, W) of the transformed image.
        keypoint_hflip_indices: See :func:`create_keypoint_hflip_indices`.

    Returns:
        ``annotation``, modified.

    Raises:
        AnnotationError: (a ValueError) the box is not 4 finite numbers with width, height >= 0
            (x1 >= x0, y1 >= y0 for XYXY), a polygon has an odd length, an RLE's run lengths do
            not sum to H x W.
    """
    if isinstance(transforms, (tuple, list)):
        transforms = T.TransformList(transforms)
    image_size = tuple(int(x) for x in image_size)
    _check_annotation(annotation)
    bbox = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
    bbox = transforms.apply_box(np.array([bbox], dtype=np.float64))[0].clip(min=0)
    annotation["bbox"] = np.minimum(bbox, list(image_size + image_size)[::-1])  # (W, H, W, H)
    annotation["bbox_mode"] = BoxMode.XYXY_ABS

    if "segmentation" in annotation:
        segm = annotation["segmentation"]
        if isinstance(segm, list):
            polygons = [np.asarray(p).reshape(-1, 2) for p in segm]  # flat [x0, y0, x1, ...] -> (P, 2)
            annotation["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
        elif isinstance(segm, dict):
            mask = mask_util.decode(_compressed_rle(segm))  # (H0, W0) uint8
            mask = transforms.apply_segmentation(mask)
            if tuple(mask.shape[:2]) != tuple(image_size):
                raise ValueError(
                    f"The RLE mask became {mask.shape[:2]} after the transforms, but the image is "
                    f"{tuple(image_size)}."
                )
            annotation["segmentation"] = mask
        else:
            raise ValueError(
                f"Cannot transform segmentation of type '{type(segm).__name__}'! Supported types are: "
                "polygons as list[list[float] or ndarray], COCO-style RLE as a dict."
            )

    if "keypoints" in annotation:
        annotation["keypoints"] = transform_keypoint_annotations(
            annotation["keypoints"], transforms, image_size, keypoint_hflip_indices)
    return annotation


_XYWH_MODES = (BoxMode.XYWH_ABS, BoxMode.XYWH_REL)
_XYXY_MODES = (BoxMode.XYXY_ABS, BoxMode.XYXY_REL)


def _check_annotation(annotation: Dict[str, Any], where: str = "") -> None:
    """Raises AnnotationError for a box / polygon / RLE that would become a wrong instance."""
    for key in ("bbox", "bbox_mode"):
        if key not in annotation:
            raise AnnotationError(f"Annotation{where} has no {key!r}; got keys {sorted(annotation)}.")
    mode = annotation["bbox_mode"]
    problem = None
    if mode in _XYWH_MODES or mode in _XYXY_MODES:
        problem = bbox_problem(annotation["bbox"], xywh=mode in _XYWH_MODES)
    segm = annotation.get("segmentation")
    if problem is None and isinstance(segm, list):
        problem = next(filter(None, map(polygon_problem, segm)), None)
    elif problem is None and isinstance(segm, dict):
        problem = rle_problem(segm)
    if problem is not None:
        mode_name = getattr(mode, "name", mode)
        raise AnnotationError(f"Annotation{where} (bbox_mode {mode_name}): {problem}")


def _compressed_rle(segm: Dict[str, Any]) -> Dict[str, Any]:
    """An RLE dict with uncompressed (list) counts -> compressed; compressed RLE as is."""
    if isinstance(segm.get("counts"), list):
        h, w = segm["size"]
        return mask_util.frPyObjects(segm, h, w)
    return segm


def transform_keypoint_annotations(keypoints: Any, transforms: Union[T.Transform, Sequence[T.Transform]],
                                   image_size: Tuple[int, int],
                                   keypoint_hflip_indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Transforms one instance's keypoints.

    Points that land outside the image become unlabelled (v = 0). After an odd number of
    horizontal flips, keypoint ``i`` takes the place of ``keypoint_hflip_indices[i]``'s partner
    (left eye <-> right eye). Unlabelled points get x = y = 0 (COCO convention).

    Args:
        keypoints: Flat ``[x, y, v] * K`` list or (K, 3) array.
        transforms: What the image went through.
        image_size: (H, W) of the transformed image.
        keypoint_hflip_indices: (K,) ints; required if the transforms flip horizontally.

    Returns:
        (K, 3) float64 array.
    """
    if not isinstance(transforms, T.TransformList):
        transforms = T.TransformList(transforms if isinstance(transforms, (list, tuple)) else [transforms])
    keypoints = np.asarray(keypoints, dtype="float64").reshape(-1, 3)  # (K*3,) -> (K, 3)
    keypoints_xy = transforms.apply_coords(keypoints[:, :2])

    # Points outside the image are "unlabelled".
    inside = (keypoints_xy >= np.array([0, 0])) & (keypoints_xy <= np.array(image_size[::-1]))
    keypoints[:, :2] = keypoints_xy
    keypoints[:, 2][~inside.all(axis=1)] = 0

    do_hflip = sum(isinstance(t, T.HFlipTransform) for t in transforms.transforms) % 2 == 1
    if do_hflip:
        if keypoint_hflip_indices is None:
            raise ValueError(
                "Cannot flip keypoints without keypoint_hflip_indices (set the dataset's "
                "metadata keypoint_names and keypoint_flip_map, see create_keypoint_hflip_indices)."
            )
        if len(keypoints) != len(keypoint_hflip_indices):
            raise ValueError(
                f"Keypoint data has {len(keypoints)} points, but metadata contains "
                f"{len(keypoint_hflip_indices)} points!"
            )
        keypoints = keypoints[np.asarray(keypoint_hflip_indices, dtype=np.int64), :]

    keypoints[keypoints[:, 2] == 0] = 0
    return keypoints


def annotations_to_instances(annos: List[Dict[str, Any]], image_size: Tuple[int, int],
                             mask_format: str = "polygon") -> Instances:
    """Transformed annotations of one image -> ``Instances`` with the fields models train on.

    Fields: ``gt_boxes`` (Boxes, N), ``gt_classes`` (int64, N), ``gt_masks`` (PolygonMasks, or
    BitMasks (N, H, W) with ``mask_format="bitmask"``) if the annotations have "segmentation",
    ``gt_keypoints`` (Keypoints (N, K, 3)) if they have "keypoints".

    Args:
        annos: Annotations in XYXY_ABS (after :func:`transform_instance_annotations`).
        image_size: (H, W).
        mask_format: "polygon" or "bitmask". RLE and mask arrays need "bitmask".
    """
    for i, obj in enumerate(annos):
        _check_annotation(obj, f" {i}")
    boxes = (np.stack([BoxMode.convert(obj["bbox"], obj["bbox_mode"], BoxMode.XYXY_ABS) for obj in annos])
             if len(annos) else np.zeros((0, 4)))
    target = Instances(image_size)
    target.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    target.gt_classes = torch.tensor([int(obj["category_id"]) for obj in annos], dtype=torch.int64)

    if len(annos) and "segmentation" in annos[0]:
        segms = [obj["segmentation"] for obj in annos]
        if mask_format == "polygon":
            bad = [i for i, s in enumerate(segms) if not isinstance(s, list)]
            if bad:
                raise ValueError(
                    f"INPUT.MASK_FORMAT is 'polygon' but instance {bad[0]} has a "
                    f"{type(segms[bad[0]]).__name__} segmentation (RLE or a mask array), not a list of "
                    "polygons; set INPUT.MASK_FORMAT bitmask (cfg.INPUT.MASK_FORMAT = 'bitmask', or "
                    "mask_format='bitmask') for such data. workbench's built-in Cityscapes instance "
                    "datasets give RLE masks, unlike detectron2's polygons."
                )
            try:
                masks = PolygonMasks(segms)
            except ValueError as e:
                raise ValueError("Failed to use mask_format=='polygon' from the given annotations!") from e
        elif mask_format == "bitmask":
            h, w = image_size
            arrays = []
            for i, segm in enumerate(segms):
                if isinstance(segm, list):
                    arrays.append(polygons_to_bitmask(segm, h, w))
                elif isinstance(segm, dict):
                    arrays.append(mask_util.decode(_compressed_rle(segm)))
                elif isinstance(segm, np.ndarray):
                    if segm.ndim != 2:
                        raise ValueError(f"Expected a 2D mask for instance {i}, got {segm.ndim} dims.")
                    arrays.append(segm)
                else:
                    raise ValueError(
                        f"Cannot convert segmentation of type '{type(segm).__name__}' to BitMasks! "
                        "Supported types are: polygons as list[list[float] or ndarray], COCO-style "
                        "RLE as a dict, or a binary segmentation mask in a 2D numpy array of shape HxW."
                    )
            masks = BitMasks(torch.from_numpy(np.stack(arrays).astype(bool)))  # (N, H, W), a fresh array
        else:
            raise ValueError(f"mask_format must be 'polygon' or 'bitmask', got {mask_format!r}.")
        target.gt_masks = masks

    if len(annos) and "keypoints" in annos[0]:
        kpts = [np.asarray(obj.get("keypoints", []), dtype=np.float32).reshape(-1, 3) for obj in annos]
        if all(k.shape == kpts[0].shape for k in kpts):
            target.gt_keypoints = Keypoints(np.stack(kpts))  # (N, K, 3)
        else:
            raise ValueError(
                f"Every instance needs the same number of keypoints; got {[len(k) for k in kpts]}."
            )
    return target


def filter_empty_instances(instances: Instances, by_box: bool = True, by_mask: bool = True,
                           box_threshold: float = 1e-5, return_mask: bool = False):
    """Drops instances whose box is empty (side <= ``box_threshold``) or whose mask is empty.

    Returns:
        The kept instances (and the (N,) bool keep mask with ``return_mask``).
    """
    if not (by_box or by_mask):
        raise ValueError("filter_empty_instances needs by_box or by_mask.")
    r = []
    if by_box:
        r.append(instances.gt_boxes.nonempty(threshold=box_threshold))
    if instances.has("gt_masks") and by_mask:
        r.append(instances.gt_masks.nonempty())
    if not r:
        m = torch.ones(len(instances), dtype=torch.bool)
    else:
        m = r[0]
        for x in r[1:]:
            m = m & x
    if return_mask:
        return instances[m], m
    return instances[m]


def create_keypoint_hflip_indices(dataset_names: Union[str, Sequence[str]]) -> np.ndarray:
    """The (K,) indices that reorder keypoints after a horizontal flip.

    Uses the metadata ``keypoint_names`` and ``keypoint_flip_map`` (pairs of names, e.g.
    ``[("left_eye", "right_eye")]``), which must agree across ``dataset_names``.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    if not dataset_names:
        raise ValueError(
            "Keypoint training needs the names of the training datasets (cfg.DATASETS.TRAIN) to "
            "read keypoint_names and keypoint_flip_map from their metadata."
        )
    check_metadata_consistency("keypoint_names", dataset_names)
    check_metadata_consistency("keypoint_flip_map", dataset_names)
    meta = MetadataCatalog.get(dataset_names[0])
    names = list(meta.keypoint_names)
    flip_map = dict(meta.keypoint_flip_map)
    flip_map.update({v: k for k, v in flip_map.items()})
    unknown = sorted(set(flip_map) - set(names))
    if unknown:
        raise ValueError(f"keypoint_flip_map of '{dataset_names[0]}' names unknown keypoints {unknown}.")
    flipped_names = [flip_map.get(n, n) for n in names]
    return np.asarray([names.index(n) for n in flipped_names])


def gen_crop_transform_with_instance(crop_size: Tuple[int, int], image_size: Tuple[int, int],
                                     instance: Dict[str, Any]) -> T.CropTransform:
    """A random (h, w) = ``crop_size`` crop that contains the centre of ``instance``'s box."""
    crop_size = np.asarray(crop_size, dtype=np.int32)
    bbox = BoxMode.convert(instance["bbox"], instance["bbox_mode"], BoxMode.XYXY_ABS)
    center_yx = (bbox[1] + bbox[3]) * 0.5, (bbox[0] + bbox[2]) * 0.5
    if not (image_size[0] >= center_yx[0] and image_size[1] >= center_yx[1]):
        raise ValueError("The annotation bounding box is outside of the image!")
    if not (image_size[0] >= crop_size[0] and image_size[1] >= crop_size[1]):
        raise ValueError("Crop size is larger than image size!")
    min_yx = np.maximum(np.floor(center_yx).astype(np.int32) - crop_size, 0)
    max_yx = np.maximum(np.asarray(image_size, dtype=np.int32) - crop_size, 0)
    max_yx = np.minimum(max_yx, np.ceil(center_yx).astype(np.int32))
    y0 = np.random.randint(min_yx[0], max_yx[0] + 1)
    x0 = np.random.randint(min_yx[1], max_yx[1] + 1)
    return T.CropTransform(x0, y0, crop_size[1], crop_size[0])


def check_metadata_consistency(key: str, dataset_names: Sequence[str]) -> None:
    """Raises ``ValueError`` if the datasets' metadata disagree on ``key`` (``AttributeError``
    if one lacks it)."""
    if len(dataset_names) == 0:
        return
    logger = logging.getLogger(__name__)
    entries = [getattr(MetadataCatalog.get(d), key) for d in dataset_names]
    for name, entry in zip(dataset_names, entries):
        if entry != entries[0]:
            logger.error("Metadata '%s' for dataset '%s' is '%s'", key, name, entry)
            logger.error("Metadata '%s' for dataset '%s' is '%s'", key, dataset_names[0], entries[0])
            raise ValueError(f"Datasets have different metadata '{key}'!")


def build_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """The default augmentations from cfg.INPUT: ResizeShortestEdge, and in training a
    RandomFlip per ``INPUT.RANDOM_FLIP``."""
    if is_train:
        min_size = cfg.INPUT.MIN_SIZE_TRAIN
        max_size = cfg.INPUT.MAX_SIZE_TRAIN
        sample_style = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    else:
        min_size = cfg.INPUT.MIN_SIZE_TEST
        max_size = cfg.INPUT.MAX_SIZE_TEST
        sample_style = "choice"
    augmentation: List[T.Augmentation] = [T.ResizeShortestEdge(min_size, max_size, sample_style)]
    if is_train and cfg.INPUT.RANDOM_FLIP != "none":
        if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "vertical"):
            raise ValueError(
                f"cfg.INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got {cfg.INPUT.RANDOM_FLIP!r}."
            )
        augmentation.append(T.RandomFlip(
            horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
            vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
        ))
    return augmentation


build_transform_gen = build_augmentation  # detectron2's older name


def get_fed_loss_cls_weights(dataset_names: Union[str, Sequence[str]],
                             freq_weight_power: float = 1.0) -> torch.Tensor:
    """Per-class sampling weights of the federated loss: (images containing the class) ** power.

    Reads ``metadata.class_image_count`` (LVIS style: ``[{"id": ..., "image_count": ...}]``) of the
    first dataset when it is there; otherwise counts, over the registered dataset dicts of every
    name, the images in which each contiguous class id appears.

    Returns:
        Tensor[K] float, K = number of thing classes.
    """
    from .catalog import DatasetCatalog

    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if not names:
        raise ValueError("get_fed_loss_cls_weights needs at least one dataset name.")
    meta = MetadataCatalog.get(names[0])
    counts_meta = getattr(meta, "class_image_count", None)
    if counts_meta is not None:
        freq = torch.tensor([c["image_count"] for c in sorted(counts_meta, key=lambda c: c["id"])],
                            dtype=torch.float32)
    else:
        num_classes = len(meta.thing_classes)
        freq = torch.zeros(num_classes, dtype=torch.float32)
        for name in names:
            for d in DatasetCatalog.get(name):
                present = {a["category_id"] for a in d.get("annotations", [])}
                for c in present:
                    freq[c] += 1
    return freq ** freq_weight_power
