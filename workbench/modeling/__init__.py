"""Models and their parts, built from a cfg through registries.

Importing this package imports every registrant module, so every built-in name is registered
before any ``build_*`` call: a name is never missing because a file was not imported.
"""

from workbench.layers import ShapeSpec

from .anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator, build_anchor_generator
from .anchor_generator import RotatedAnchorGenerator
from .backbone import (
    BACKBONE_REGISTRY,
    FPN,
    Backbone,
    BasicStem,
    BottleneckBlock,
    ResNet,
    ResNetBlockBase,
    build_backbone,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
    make_stage,
)
from .backbone import MViT, SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate
from .backbone import SwinTransformer
from .box_regression import Box2BoxTransform, Box2BoxTransformRotated
from .matcher import Matcher
from .meta_arch import (
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    FCOS,
    GeneralizedRCNN,
    PanopticFPN,
    ProposalNetwork,
    RetinaNet,
    SemanticSegmentor,
    SemSegFPNHead,
    build_model,
    build_sem_seg_head,
    detector_postprocess,
    sem_seg_postprocess,
)
from .poolers import ROIPooler
from .proposal_generator import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN_HEAD_REGISTRY,
    RPN,
    StandardRPNHead,
    build_proposal_generator,
    build_rpn_head,
)
from .roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    BaseKeypointRCNNHead,
    BaseMaskRCNNHead,
    CascadeROIHeads,
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    build_box_head,
    build_keypoint_head,
    build_mask_head,
    build_roi_heads,
)

# Rotated boxes (RRPN, Rotated Fast R-CNN): imported here so that their names are registered.
from .proposal_generator.rrpn import RRPN
from .roi_heads.rotated_fast_rcnn import RotatedFastRCNNOutputLayers, RROIHeads

__all__ = [k for k in globals().keys() if not k.startswith("_")]
