"""Seeing a detector: drawings, feature views and ipywidgets explorers.

::

    from workbench import vis
    from workbench.data import MetadataCatalog

    v = vis.Visualizer(image_bgr, MetadataCatalog.get("shapes_val"), input_format="BGR")
    v.draw_instance_predictions(outputs["instances"], score_thresh=0.5).save("pred.png")
    vis.level_grid(tr.backbone.features)            # tr = workbench.inspect.trace(model, inputs)
    vis.weight_stats(model).flagged()               # dead / constant / overflowing tensors
    vis.TraceExplorer(model, tr, metadata)          # in JupyterLab

Modules: :mod:`.colors` (palettes), :mod:`.visualizer` (``Visualizer``, ``VisImage``),
:mod:`.features` (feature / head / weight views), :mod:`.explorers` (widgets). Metadata
(class names, colours, keypoint rules, stuff classes) comes from
:class:`workbench.data.MetadataCatalog`.
"""

from . import colors
from .explorers import (DetectionExplorer, Explorer, FeatureExplorer, KeypointExplorer, MaskExplorer,
                        ProposalExplorer, SegmentationExplorer, TraceExplorer, colorbar_png, png_size)
from .error_explorer import ErrorExplorer
from .features import (PlotImage, WeightStats, activation_histograms, channel_montage, channel_vector_plot,
                       feature_levels, feature_map, feature_vector, keypoint_heatmaps_view, level_grid,
                       mask_logits_view, pca_image, pca_rgb, pixel_to_cell, rois_per_level, trace_image,
                       weight_stats)
from .visualizer import VisImage, Visualizer, box_iou_matrix, encode_png, match_by_iou, to_numpy_image

__all__ = [
    "colors", "Visualizer", "VisImage", "to_numpy_image", "box_iou_matrix", "match_by_iou",
    "encode_png", "PlotImage", "feature_map", "level_grid", "channel_montage", "pca_rgb",
    "pca_image", "activation_histograms", "rois_per_level", "mask_logits_view",
    "keypoint_heatmaps_view", "trace_image", "WeightStats", "weight_stats", "Explorer",
    "DetectionExplorer", "FeatureExplorer", "ProposalExplorer", "MaskExplorer", "KeypointExplorer",
    "SegmentationExplorer", "TraceExplorer", "ErrorExplorer", "png_size", "colorbar_png", "feature_vector",
    "channel_vector_plot", "pixel_to_cell", "feature_levels",
]
