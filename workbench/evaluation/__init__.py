"""Evaluation: run a model over a dataset (``inference_on_dataset``) and score its outputs
(COCO AP, semantic-segmentation mIoU, panoptic quality)."""

from .coco_evaluation import COCOEvaluator, instances_to_coco_json
from .lvis_evaluation import LVISEvaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .panoptic_evaluation import COCOPanopticEvaluator, PQStat, pq_compute_single_image
from .sem_seg_evaluation import SemSegEvaluator
from .testing import flatten_results_dict, print_csv_format, verify_results

__all__ = [
    "COCOEvaluator", "COCOPanopticEvaluator", "DatasetEvaluator", "DatasetEvaluators", "LVISEvaluator", "PQStat",
    "SemSegEvaluator", "flatten_results_dict", "inference_context", "inference_on_dataset",
    "instances_to_coco_json", "pq_compute_single_image", "print_csv_format", "verify_results",
]
