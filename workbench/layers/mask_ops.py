"""detectron2's path ``detectron2/layers/mask_ops.py``: re-exports of
:mod:`workbench.structures.mask_ops`, where the implementation lives."""

from workbench.structures.mask_ops import paste_masks_in_image

__all__ = ["paste_masks_in_image"]
