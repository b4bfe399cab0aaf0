"""Data: datasets by name, the dataset-dict -> model-input mapper, transforms and loaders.

::

    from workbench.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
    from workbench.data.datasets import register_coco_instances

    register_coco_instances("shapes_train", {}, "shapes/train.json", "shapes/images")
    loader = build_detection_train_loader(cfg)     # cfg.DATASETS.TRAIN = ("shapes_train",)
"""

from . import datasets, samplers, transforms
from . import detection_utils
from .build import (
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    load_proposals_into_dataset,
    print_instances_class_histogram,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .common import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    MapDataset,
    ToIterableDataset,
    set_default_dataset_from_list_serialize_method,
)
from .dataset_mapper import DatasetMapper

__all__ = [
    "AspectRatioGroupedDataset", "DatasetCatalog", "DatasetFromList", "DatasetMapper", "MapDataset",
    "Metadata", "MetadataCatalog", "ToIterableDataset", "build_batch_data_loader",
    "set_default_dataset_from_list_serialize_method",
    "build_detection_test_loader", "build_detection_train_loader", "datasets", "detection_utils",
    "get_detection_dataset_dicts", "load_proposals_into_dataset", "print_instances_class_histogram",
    "samplers", "transforms",
]
