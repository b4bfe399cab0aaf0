"""Dataset-level analysis of a detector: where it goes wrong, read from the evaluation.

:func:`per_image_results` reads pycocotools' own per-image matching back
(``COCOEvaluator.per_image``): per detection its matched object and IoU, per object the
detection that took it.
"""

from .per_image import ImageResult, per_image_results

__all__ = ["ImageResult", "per_image_results"]
