"""ipywidgets explorers on top of a :class:`workbench.inspect.Trace`.

::

    tr = wi.trace(predictor, DatasetCatalog.get("shapes_val")[:3])   # the pass that was scored
    ex = TraceExplorer(predictor, tr, MetadataCatalog.get("shapes_val"))
    ex                                  # in JupyterLab: tabs, sliders, the picture
    ex.detections.set(score_thresh=0.7, classes=[0, 2])   # same as moving the widgets
    ex.detections.click(120, 80)        # same as clicking the picture there: picks a detection
    ex.detections.last.drawn["boxes"]   # what is on screen now
    ex.detections.png                   # the PNG bytes shown

Every explorer renders through a ``widgets.Image`` holding PNG bytes (deterministic under
nbval, testable without a kernel) shown at its native pixel size times an integer zoom,
redraws once per change, and keeps ``last`` (the ``VisImage`` / ``PlotImage`` drawn), ``png``
and ``renders`` (a counter). What they share is in :mod:`.explorer_base`; the explorers live in
:mod:`.detection_explorer`, :mod:`.feature_explorers`, :mod:`.head_explorers` and
:mod:`.trace_explorer`.
"""

from .detection_explorer import DetectionExplorer, scored_trace
from .explorer_base import Explorer, png_size, snap_to_control
from .feature_explorers import FeatureExplorer, ProposalExplorer, colorbar_png
from .head_explorers import KeypointExplorer, MaskExplorer, SegmentationExplorer
from .trace_explorer import TraceExplorer

__all__ = ["Explorer", "DetectionExplorer", "FeatureExplorer", "ProposalExplorer", "MaskExplorer",
           "KeypointExplorer", "SegmentationExplorer", "TraceExplorer", "scored_trace", "png_size",
           "snap_to_control", "colorbar_png"]
