"""detectron2's path ``detectron2/modeling/postprocessing.py``: re-exports of
:mod:`workbench.modeling.meta_arch.postprocessing`, where the implementation lives."""

from workbench.modeling.meta_arch.postprocessing import detector_postprocess, sem_seg_postprocess

__all__ = ["detector_postprocess", "sem_seg_postprocess"]
