"""Meta-architectures: whole models built from a cfg by ``build_model``."""

from .build import META_ARCH_REGISTRY, build_model
from .dense_detector import DenseDetector
from .fcos import FCOS
from .panoptic_fpn import PanopticFPN, combine_semantic_and_instance_outputs
from .postprocessing import detector_postprocess, sem_seg_postprocess
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .retinanet import RetinaNet, RetinaNetHead
from .semantic_seg import SEM_SEG_HEADS_REGISTRY, SemanticSegmentor, SemSegFPNHead, build_sem_seg_head

__all__ = [
    "META_ARCH_REGISTRY", "build_model", "detector_postprocess", "sem_seg_postprocess",
    "GeneralizedRCNN", "ProposalNetwork", "DenseDetector", "FCOS", "RetinaNet", "RetinaNetHead",
    "SEM_SEG_HEADS_REGISTRY", "SemanticSegmentor", "SemSegFPNHead", "build_sem_seg_head",
    "PanopticFPN", "combine_semantic_and_instance_outputs",
]
