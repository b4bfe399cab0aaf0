"""Building blocks shared by every model: shapes, norms, convs, NMS, ROIAlign, losses."""

from . import weight_init
from .batch_norm import FrozenBatchNorm2d, NaiveSyncBatchNorm, get_norm
from .blocks import CNNBlockBase, DepthwiseSeparableConv2d
from .aspp import ASPP
from .cycle_batch_norm import CycleBatchNormList
from .deform_conv import DeformConv, ModulatedDeformConv
from .layer_norm import LayerNorm
from .mask_ops import paste_masks_in_image
from .losses import ciou_loss, diou_loss, giou_loss, sigmoid_focal_loss, smooth_l1_loss
from .nms import batched_nms, nms
from .nms_rotated import batched_nms_rotated, nms_rotated
from .roi_align_rotated import ROIAlignRotated, roi_align_rotated
from .rotated_boxes import pairwise_iou_rotated
from .roi_align import ROIAlign
from .shape_spec import ShapeSpec
from .wrappers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Linear,
    cat,
    cross_entropy,
    empty_input_loss_func_wrapper,
    interpolate,
    move_device_like,
    nonzero_tuple,
    shapes_to_tensor,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
