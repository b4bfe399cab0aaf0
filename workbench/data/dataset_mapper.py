"""``DatasetMapper``: one dataset dict (file names, annotations) -> one model input.

Output per image: ``"image"`` (C, H, W) uint8 tensor in ``INPUT.FORMAT`` channel order, H x W
after augmentation; ``"height"``/``"width"`` of the original image (the model returns
predictions at that size); in training ``"instances"`` (``gt_boxes``, ``gt_classes``,
``gt_masks``, ``gt_keypoints``); ``"sem_seg"`` (H, W) int64 when the dict has a
``sem_seg_file_name``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from workbench.config import configurable
from workbench.config.validate import INPUT_KEYS, check_config_values

from . import detection_utils as utils
from . import transforms as T

__all__ = ["DatasetMapper"]


class DatasetMapper:
    """Reads an image, augments it together with its annotations and builds model inputs.

    It does what detectron2's ``DatasetMapper`` does:

    1. read ``file_name`` in ``image_format`` (and ``sem_seg_file_name`` as an "L" label map);
    2. apply the augmentations (by default ResizeShortestEdge, and RandomFlip in training) to
       the image and the label map;
    3. in training, transform the non-crowd annotations (box, polygons / RLE, keypoints,
       swapping left/right keypoints on a horizontal flip) and turn them into ``Instances``,
       dropping instances left empty.

    Args:
        is_train: Training mode keeps the annotations; test mode drops them.
        augmentations: Augmentations (or fixed transforms) applied in order.
        image_format: ``"BGR"``, ``"RGB"``, ``"L"``, ... (cfg.INPUT.FORMAT).
        use_instance_mask: Keep "segmentation" (cfg.MODEL.MASK_ON).
        use_keypoint: Keep "keypoints" (cfg.MODEL.KEYPOINT_ON).
        instance_mask_format: ``"polygon"`` or ``"bitmask"`` (cfg.INPUT.MASK_FORMAT).
        keypoint_hflip_indices: See :func:`~.detection_utils.create_keypoint_hflip_indices`.
        precomputed_proposal_topk: Keep this many precomputed proposals, if the dicts have them.
        recompute_boxes: Set ``gt_boxes`` from the masks after augmentation (for crops).

    Example::

        mapper = DatasetMapper(cfg, is_train=True)
        model_input = mapper(DatasetCatalog.get("shapes_train")[0])
    """

    @configurable
    def __init__(self, is_train: bool = True, *,
                 augmentations: Sequence[Union[T.Augmentation, T.Transform]],
                 image_format: str,
                 use_instance_mask: bool = False,
                 use_keypoint: bool = False,
                 instance_mask_format: str = "polygon",
                 keypoint_hflip_indices: Optional[np.ndarray] = None,
                 precomputed_proposal_topk: Optional[int] = None,
                 recompute_boxes: bool = False) -> None:
        if recompute_boxes and not use_instance_mask:
            raise ValueError("recompute_boxes requires instance masks (use_instance_mask=True).")
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ValueError(f"instance_mask_format must be 'polygon' or 'bitmask', got {instance_mask_format!r}.")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.proposal_topk = precomputed_proposal_topk
        self.recompute_boxes = recompute_boxes
        logging.getLogger(__name__).info(
            "[DatasetMapper] Augmentations used in %s: %s", "training" if is_train else "inference",
            self.augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        check_config_values(cfg, INPUT_KEYS)  # ConfigValueError naming an impossible INPUT.* value
        augs = utils.build_augmentation(cfg, is_train)
        if cfg.INPUT.CROP.ENABLED and is_train:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
            recompute_boxes = cfg.MODEL.MASK_ON
        else:
            recompute_boxes = False
        ret = {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "use_keypoint": cfg.MODEL.KEYPOINT_ON,
            "recompute_boxes": recompute_boxes,
        }
        if cfg.MODEL.KEYPOINT_ON and is_train:
            # Flip indices matter only when flipping, i.e. in training.
            ret["keypoint_hflip_indices"] = utils.create_keypoint_hflip_indices(cfg.DATASETS.TRAIN)
        if cfg.MODEL.LOAD_PROPOSALS:
            ret["precomputed_proposal_topk"] = (
                cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN if is_train
                else cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST
            )
        return ret

    def _transform_annotations(self, dataset_dict: Dict[str, Any], transforms: T.TransformList,
                               image_shape: Tuple[int, int]) -> None:
        for anno in dataset_dict["annotations"]:
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
        annos = [
            utils.transform_instance_annotations(
                obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices)
            for obj in dataset_dict.pop("annotations")
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Maps one dataset dict (left unmodified) to one model input dict."""
        dataset_dict = copy.deepcopy(dataset_dict)  # the mapper modifies it below
        if "file_name" not in dataset_dict:
            raise KeyError(f"A dataset dict needs 'file_name'; got keys {sorted(dataset_dict)}.")
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)

        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)  # (H, W, 1) -> (H, W)
        else:
            sem_seg_gt = None

        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = tuple(image.shape[:2])  # (H, W)

        # (H, W, C) -> (C, H, W); uint8 stays uint8, the model normalises.
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))

        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms,
                                      proposal_topk=self.proposal_topk)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict

        if "annotations" in dataset_dict:
            try:
                self._transform_annotations(dataset_dict, transforms, image_shape)
            except utils.AnnotationError as e:
                raise utils.AnnotationError(
                    f"{dataset_dict['file_name']} (image_id={dataset_dict.get('image_id')}): {e}") from e
        return dataset_dict
