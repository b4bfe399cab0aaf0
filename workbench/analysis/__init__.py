"""Dataset-level analysis of a detector: where it goes wrong, read from the evaluation.

:func:`per_image_results` reads pycocotools' own per-image matching back
(``COCOEvaluator.per_image``): per detection its matched object and IoU, per object the
detection that took it. :func:`error_breakdown` sorts the mistakes TIDE's way (``cls``,
``loc``, ``both``, ``duplicate``, ``bkg``, ``miss``) and gives the AP each fix regains
(``COCOEvaluator.error_breakdown``). :func:`confusion_matrix` (with a background row and
column) and :func:`pr_curves` (AP and the best-F1 score threshold per class) read the same
matching. :func:`rank_images` orders the images by their errors or AP, and
:func:`explain_image` traces one (the scored pass) and ties each false positive to its
detection's provenance and each miss to ``why_missed``. :func:`detection_embeddings` puts the
box-head embeddings of the evaluated detections in 2-D (PCA), coloured by class or error type,
with a gallery of crops for a selected group. :func:`open_set_metrics` gives A-OSE, wilderness
impact, unknown recall and AP when some classes are held out as unknown; :func:`anchor_coverage`
the best anchor IoU per level and the RPN's recall of every object, by object size.
"""

from .confusion import ConfusionMatrix, PRCurve, confusion_matrix, plot_pr_curves, pr_curves
from .coverage import AnchorCoverage, anchor_coverage
from .embeddings import DetectionEmbeddings, detection_embeddings, pca_2d
from .errors import ERROR_TYPES, ErrorBreakdown, coco_ap, error_breakdown
from .images import ImageExplanation, ImageSummary, explain_image, rank_images
from .open_set import OpenSetImage, OpenSetMetrics, energy_histogram, open_set_metrics
from .per_image import ImageResult, per_image_results

__all__ = ["ImageResult", "per_image_results", "ERROR_TYPES", "ErrorBreakdown", "error_breakdown",
           "coco_ap", "ConfusionMatrix", "confusion_matrix", "PRCurve", "pr_curves", "plot_pr_curves",
           "ImageSummary", "rank_images", "ImageExplanation", "explain_image",
           "DetectionEmbeddings", "detection_embeddings", "pca_2d",
           "OpenSetImage", "OpenSetMetrics", "open_set_metrics", "energy_histogram",
           "AnchorCoverage", "anchor_coverage"]
