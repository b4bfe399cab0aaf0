"""The inspection layer: open a detector up stage by stage, trace detections back, extract features.

Entry points (each has an example in its docstring)::

    from workbench import inspect as wi
    tr = wi.trace(model, inputs)                 # every stage; tr.outputs == model(inputs)
    tr.detection(0, image=0)                     # proposal, anchor, level, ROI feature, embedding
    wi.rethreshold(model, tr, score_thresh=0.3)  # other test settings, no backbone/head re-run
    wi.roi_features(model, tr, boxes)            # features of your own boxes (original pixels)
    with wi.capture(model, "roi_heads.box_head") as cap: model(inputs)   # plain hooks
    wi.list_modules(model, inputs)               # capturable names and their output shapes

``trace`` runs the model's own forward once and reads what its stages recorded
(:mod:`workbench.modeling.recording`); with dataset dicts, paths or arrays and a cfg (or a
``DefaultPredictor``) it applies the test-time transform, and joins the ground truth::

    tr = wi.trace(predictor, DatasetCatalog.get("shapes_val")[0])
    tr.detection(0).match, tr.missed(0), tr.why_missed(tr.missed(0)[0])

The stage functions (``wi.stages.preprocess``, ``backbone``, ``rpn``, ``box_head``,
``given_boxes``) call one model part at a time and return its record. Open-world probes (energy scores, embedding prototypes) live in
``wi.openworld``; dataset-scale extraction in :mod:`workbench.extract`.
"""

from . import openworld, stages
from .hooks import Captured, capture, describe, list_modules, map_tensors
from .roi import RoiFeatures, roi_features
from .ground_truth import GroundTruth, Match
from .rerun import rethreshold, resume
from .trace import Detection, Provenance, Trace, trace
from .why_missed import WhyMissed

__all__ = [
    "Captured", "capture", "describe", "list_modules", "map_tensors",
    "Trace", "Detection", "Provenance", "trace", "resume", "rethreshold",
    "RoiFeatures", "roi_features", "stages", "openworld", "GroundTruth", "Match", "WhyMissed",
]
