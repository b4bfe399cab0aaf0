"""The inspection layer: open a detector up stage by stage, trace detections back, extract features.

Entry points (each has an example in its docstring)::

    from workbench import inspect as wi
    tr = wi.trace(model, inputs)                 # every stage; tr.outputs == model(inputs)
    tr.detection(0, image=0)                     # proposal, anchor, level, ROI feature, embedding
    wi.rethreshold(model, tr, score_thresh=0.3)  # other test settings, no backbone/head re-run
    wi.roi_features(model, tr, boxes)            # features of your own boxes (original pixels)
    with wi.capture(model, "roi_heads.box_head") as cap: model(inputs)   # plain hooks
    wi.list_modules(model, inputs)               # capturable names and their output shapes

The stage functions (``wi.stages.preprocess``, ``backbone``, ``rpn``, ``box_head``,
``mask_head``, ``keypoint_head``, ``dense_head``, ``sem_seg_head``, ``postprocess``) can be
called one at a time. Open-world probes (energy scores, embedding prototypes) live in
``wi.openworld``; dataset-scale extraction in :mod:`workbench.extract`.
"""

from . import openworld, stages
from .hooks import Captured, capture, describe, list_modules, map_tensors
from .roi import RoiFeatures, roi_features
from .trace import Detection, Provenance, Trace, rethreshold, resume, trace

__all__ = [
    "Captured", "capture", "describe", "list_modules", "map_tensors",
    "Trace", "Detection", "Provenance", "trace", "resume", "rethreshold",
    "RoiFeatures", "roi_features", "stages", "openworld",
]
