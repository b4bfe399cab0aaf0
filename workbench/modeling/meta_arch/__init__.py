"""Meta-architectures: whole models built from a cfg by ``build_model``."""

from .build import META_ARCH_REGISTRY, build_model
from .postprocessing import detector_postprocess, sem_seg_postprocess
from .rcnn import GeneralizedRCNN, ProposalNetwork

__all__ = [
    "META_ARCH_REGISTRY", "build_model", "detector_postprocess", "sem_seg_postprocess",
    "GeneralizedRCNN", "ProposalNetwork",
]
