"""Data loaders for training (infinite, seeded, sharded by rank, grouped by aspect ratio) and
for inference (each image once, batch size 1 by default).

Both accept a cfg or explicit arguments::

    loader = build_detection_train_loader(cfg)                     # cfg.DATASETS.TRAIN etc.
    loader = build_detection_train_loader(dicts, mapper=DatasetMapper(cfg, True),
                                          total_batch_size=2, num_workers=0)
    for batch in loader:          # list of SOLVER.IMS_PER_BATCH // world_size mapped dicts
        losses = model(batch)
"""

from __future__ import annotations

import itertools
import logging
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.utils.data as torchdata
from tabulate import tabulate

from workbench.config import configurable
from workbench.config.validate import INPUT_KEYS, check_config_values
from workbench.structures import BoxMode
from workbench.utils.comm import get_world_size
from workbench.utils.env import seed_all_rng

from .catalog import DatasetCatalog, MetadataCatalog
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper
from .detection_utils import check_metadata_consistency
from .samplers import (
    InferenceSampler,
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)

__all__ = [
    "build_batch_data_loader", "build_detection_train_loader", "build_detection_test_loader",
    "get_detection_dataset_dicts", "load_proposals_into_dataset", "print_instances_class_histogram",
    "filter_images_with_only_crowd_annotations", "filter_images_with_few_keypoints",
    "trivial_batch_collator", "worker_init_reset_seed",
]

logger = logging.getLogger(__name__)


def filter_images_with_only_crowd_annotations(dataset_dicts: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Drops images with no non-crowd annotation (they give no training signal)."""
    num_before = len(dataset_dicts)

    def valid(anns: List[Dict[str, Any]]) -> bool:
        return any(ann.get("iscrowd", 0) == 0 for ann in anns)

    dataset_dicts = [x for x in dataset_dicts if valid(x["annotations"])]
    logger.info("Removed %d images with no usable annotations. %d images left.",
                num_before - len(dataset_dicts), len(dataset_dicts))
    return dataset_dicts


def filter_images_with_few_keypoints(dataset_dicts: List[Dict[str, Any]],
                                     min_keypoints_per_image: int) -> List[Dict[str, Any]]:
    """Drops images with fewer than ``min_keypoints_per_image`` labelled keypoints (v > 0)."""
    num_before = len(dataset_dicts)

    def visible_keypoints_in_image(dic: Dict[str, Any]) -> int:
        return sum(int((np.asarray(ann["keypoints"][2::3]) > 0).sum())
                   for ann in dic["annotations"] if "keypoints" in ann)

    dataset_dicts = [x for x in dataset_dicts if visible_keypoints_in_image(x) >= min_keypoints_per_image]
    logger.info("Removed %d images with fewer than %d keypoints.",
                num_before - len(dataset_dicts), min_keypoints_per_image)
    return dataset_dicts


def load_proposals_into_dataset(dataset_dicts: List[Dict[str, Any]], proposal_file: str) -> List[Dict[str, Any]]:
    """Adds precomputed proposals to the dicts, from a pickle of ``{"ids", "boxes",
    "objectness_logits", "bbox_mode" (optional)}`` (detectron2's proposal file format)."""
    from workbench.checkpoint import safe_load_pickle

    logger.info("Loading proposals from: %s", proposal_file)
    proposals = safe_load_pickle(proposal_file, encoding="latin1")
    rename_keys = {"indexes": "ids", "scores": "objectness_logits"}
    for key in rename_keys:
        if key in proposals:
            proposals[rename_keys[key]] = proposals.pop(key)
    # Proposals are stored by image id.
    img_ids = {str(record["image_id"]) for record in dataset_dicts}
    id_to_index = {str(id): i for i, id in enumerate(proposals["ids"]) if str(id) in img_ids}
    bbox_mode = BoxMode(proposals["bbox_mode"]) if "bbox_mode" in proposals else BoxMode.XYXY_ABS
    for record in dataset_dicts:
        i = id_to_index[str(record["image_id"])]
        record["proposal_boxes"] = proposals["boxes"][i]
        record["proposal_objectness_logits"] = proposals["objectness_logits"][i]
        record["proposal_bbox_mode"] = bbox_mode
    return dataset_dicts


def print_instances_class_histogram(dataset_dicts: List[Dict[str, Any]], class_names: Sequence[str]) -> None:
    """Logs how many instances (non-crowd) each class has."""
    num_classes = len(class_names)
    hist_bins = np.arange(num_classes + 1)
    histogram = np.zeros((num_classes,), dtype=np.int64)
    for entry in dataset_dicts:
        classes = np.asarray([x["category_id"] for x in entry["annotations"] if not x.get("iscrowd", 0)], dtype=np.int64)
        if len(classes):
            if classes.min() < 0 or classes.max() >= num_classes:
                raise ValueError(
                    f"Got an invalid category_id={classes.min() if classes.min() < 0 else classes.max()} "
                    f"for a dataset of {num_classes} classes ({entry.get('file_name', '?')})."
                )
        histogram += np.histogram(classes, bins=hist_bins)[0]
    n_cols = min(6, len(class_names) * 2)
    pairs = list(itertools.chain(*[[str(class_names[i])[:13], int(v)] for i, v in enumerate(histogram)]))
    total = int(histogram.sum())
    if num_classes > 1:
        pairs.extend([None] * (n_cols - (len(pairs) % n_cols)) if len(pairs) % n_cols else [])
        pairs.extend(["total", total])
    rows = list(itertools.zip_longest(*[pairs[i::n_cols] for i in range(n_cols)]))
    table = tabulate(rows, headers=["category", "#instances"] * (n_cols // 2), tablefmt="pipe",
                     numalign="left", stralign="center")
    logger.info("Distribution of instances among all %d categories:\n%s", num_classes, table)


def get_detection_dataset_dicts(names: Union[str, Sequence[str]], filter_empty: bool = True,
                                min_keypoints: int = 0, proposal_files: Optional[Sequence[str]] = None,
                                check_consistency: bool = True) -> List[Dict[str, Any]]:
    """The dicts of the named datasets, concatenated and filtered for training.

    Args:
        names: Registered dataset names.
        filter_empty: Drop images without non-crowd annotations.
        min_keypoints: Drop images with fewer labelled keypoints.
        proposal_files: One proposal file per dataset, or None.
        check_consistency: Require the datasets to agree on ``thing_classes``.
    """
    if isinstance(names, str):
        names = [names]
    if not len(names):
        raise ValueError("get_detection_dataset_dicts needs at least one dataset name (e.g. cfg.DATASETS.TRAIN is empty).")
    dataset_dicts = [DatasetCatalog.get(name) for name in names]
    if isinstance(dataset_dicts[0], torchdata.Dataset):
        # A registered torch dataset is returned as is (several: concatenated), like detectron2.
        if len(dataset_dicts) > 1:
            return torchdata.ConcatDataset(dataset_dicts)
        return dataset_dicts[0]
    for name, dicts in zip(names, dataset_dicts):
        if not len(dicts):
            raise ValueError(f"Dataset '{name}' is empty!")
    if proposal_files is not None:
        if len(names) != len(proposal_files):
            raise ValueError(f"{len(names)} datasets but {len(proposal_files)} proposal files.")
        dataset_dicts = [load_proposals_into_dataset(d, f) for d, f in zip(dataset_dicts, proposal_files)]

    dataset_dicts = list(itertools.chain.from_iterable(dataset_dicts))
    has_instances = "annotations" in dataset_dicts[0]
    if filter_empty and has_instances:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts)
    if min_keypoints > 0 and has_instances:
        dataset_dicts = filter_images_with_few_keypoints(dataset_dicts, min_keypoints)
    if check_consistency and has_instances:
        try:
            class_names = MetadataCatalog.get(names[0]).thing_classes
        except AttributeError:  # no thing_classes: nothing to check or show
            pass
        else:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dataset_dicts, class_names)
    if not len(dataset_dicts):
        raise ValueError(f"No valid data found in {','.join(names)}.")
    return dataset_dicts


def trivial_batch_collator(batch: List[Any]) -> List[Any]:
    """A batch is the list of its elements (models take ``list[dict]``)."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Seeds a data-loader worker from its torch seed (base seed + worker id), which the loader
    derives from the main process's torch generator: seeded runs stay reproducible and workers
    draw different augmentations."""
    initial_seed = torch.initial_seed() % 2 ** 31
    seed_all_rng(initial_seed + worker_id)


def build_batch_data_loader(dataset, sampler: Optional[torchdata.Sampler], total_batch_size: Optional[int], *,
                            aspect_ratio_grouping: bool = False, num_workers: int = 0,
                            collate_fn: Optional[Callable[[List[Any]], Any]] = None,
                            drop_last: bool = True, single_gpu_batch_size: Optional[int] = None,
                            prefetch_factor: int = 2, persistent_workers: bool = False,
                            pin_memory: bool = False, seed: Optional[int] = None, **kwargs: Any):
    """Batches a (mapped) dataset in ``sampler`` order for training.

    Args:
        dataset: Map-style dataset (read in ``sampler`` order) or iterable dataset
            (``sampler`` must then be None).
        sampler: Index sampler, usually infinite.
        total_batch_size: Images per iteration over all ranks; each rank gets
            ``total_batch_size // world_size``.
        aspect_ratio_grouping: Batch landscape and portrait images separately (needs
            ``drop_last``: incomplete groups are never yielded).
        num_workers: Data-loader worker processes (0: load in the main process).
        collate_fn: Applied to each batch (list of dicts); default: keep the list.
        drop_last: Drop the last incomplete batch (of a finite sampler).
        single_gpu_batch_size: Images per rank, instead of ``total_batch_size`` (give one).
        prefetch_factor, persistent_workers, pin_memory: Passed to the ``DataLoader`` (the
            first only when ``num_workers > 0``).
        seed: Seeds the ``DataLoader``'s generator (hence the workers' base seed).
        **kwargs: Passed to the ``DataLoader``.

    Returns:
        An iterable of batches.
    """
    if single_gpu_batch_size:
        if total_batch_size:
            raise ValueError("total_batch_size and single_gpu_batch_size are mutually exclusive; give one.")
        batch_size = single_gpu_batch_size
    else:
        world_size = get_world_size()
        if not total_batch_size or total_batch_size <= 0 or total_batch_size % world_size != 0:
            raise ValueError(
                f"Total batch size ({total_batch_size}) must be divisible by the number of processes ({world_size})."
            )
        batch_size = total_batch_size // world_size
    logger.info("Making batched data loader with batch_size=%d", batch_size)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("sampler must be None when the dataset is an IterableDataset.")
    else:
        dataset = ToIterableDataset(dataset, sampler, shard_chunk_size=batch_size)

    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    worker_kwargs: Dict[str, Any] = dict(
        num_workers=num_workers, worker_init_fn=worker_init_reset_seed,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        persistent_workers=persistent_workers, pin_memory=pin_memory, generator=generator, **kwargs)
    if aspect_ratio_grouping:
        if not drop_last:
            raise ValueError("Aspect ratio grouping drops incomplete batches: it needs drop_last=True.")
        data_loader = torchdata.DataLoader(dataset, collate_fn=operator.itemgetter(0), **worker_kwargs)  # one dict at a time
        data_loader = AspectRatioGroupedDataset(data_loader, batch_size)
        if collate_fn is None:
            return data_loader
        return MapDataset(data_loader, collate_fn)
    return torchdata.DataLoader(
        dataset, batch_size=batch_size, drop_last=drop_last,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn, **worker_kwargs)


def _train_loader_from_config(cfg, mapper=None, *, dataset=None, sampler=None) -> Dict[str, Any]:
    # Before the (maybe slow) dataset loading: impossible values raise ConfigValueError.
    check_config_values(cfg, ("SOLVER.IMS_PER_BATCH",) + (INPUT_KEYS if mapper is None else ()))
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    if mapper is None:
        mapper = DatasetMapper(cfg, True)
    if sampler is None:
        sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
        # Seeded with cfg.SEED as detectron2 does: the data order is fixed for a given SEED (also
        # for the default SEED=-1, which torch.Generator accepts as a seed like any other).
        if isinstance(dataset, torchdata.IterableDataset):
            logger.info("Not using any sampler since the dataset is an IterableDataset.")
            sampler = None
        elif sampler_name == "TrainingSampler":
            logger.info("Using training sampler %s", sampler_name)
            sampler = TrainingSampler(len(dataset), seed=cfg.SEED)
        elif sampler_name == "RepeatFactorTrainingSampler":
            logger.info("Using training sampler %s", sampler_name)
            repeat_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dataset, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT)
            sampler = RepeatFactorTrainingSampler(repeat_factors, seed=cfg.SEED)
        elif sampler_name == "RandomSubsetTrainingSampler":
            ratio = cfg.DATALOADER.get("RANDOM_SUBSET_RATIO")
            if ratio is None:
                raise KeyError("SAMPLER_TRAIN='RandomSubsetTrainingSampler' needs cfg.DATALOADER.RANDOM_SUBSET_RATIO.")
            sampler = RandomSubsetTrainingSampler(len(dataset), ratio)
        else:
            raise ValueError(f"Unknown training sampler: {sampler_name}")
    return {
        "dataset": dataset,
        "sampler": sampler,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(dataset, *, mapper, sampler=None, total_batch_size: int,
                                 aspect_ratio_grouping: bool = True, num_workers: int = 0,
                                 collate_fn=None, **kwargs: Any):
    """An infinite loader of training batches.

    With a cfg: the dicts of ``cfg.DATASETS.TRAIN`` (filtered), ``DatasetMapper(cfg, True)``,
    ``cfg.DATALOADER.SAMPLER_TRAIN``, ``SOLVER.IMS_PER_BATCH``, ``DATALOADER.*``; any of them
    can be overridden by keyword (``build_detection_train_loader(cfg, mapper=my_mapper)``).

    Args:
        dataset: list of dataset dicts or a torch dataset.
        mapper: Called on each element (e.g. a :class:`DatasetMapper`); None: no mapping.
        sampler: Index sampler; default :class:`TrainingSampler` (with a cfg: seeded with
            ``cfg.SEED``, as detectron2 does, so the order is fixed for a given SEED; without:
            a seed shared across ranks, drawn from numpy's global generator).
        total_batch_size: Images per iteration over all ranks.
        aspect_ratio_grouping: Batch landscape and portrait images separately.
        num_workers: Worker processes; 0 loads in the main process.
        collate_fn: Applied to each batch; default: keep the list.
        **kwargs: Passed to :func:`build_batch_data_loader` (``drop_last``, ``seed``, ...).

    Returns:
        An iterable of lists of mapped dicts, ``total_batch_size // world_size`` per list.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("sampler must be None when the dataset is an IterableDataset.")
    else:
        if sampler is None:
            sampler = TrainingSampler(len(dataset))
        if not isinstance(sampler, torchdata.Sampler):
            raise TypeError(f"Expected a torch Sampler, got {type(sampler).__name__}.")
    return build_batch_data_loader(
        dataset, sampler, total_batch_size, aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers, collate_fn=collate_fn, **kwargs)


def _test_loader_from_config(cfg, dataset_name, mapper=None) -> Dict[str, Any]:
    if mapper is None:
        check_config_values(cfg, INPUT_KEYS)  # ConfigValueError before loading the dataset
    if isinstance(dataset_name, str):
        dataset_name = [dataset_name]
    dataset = get_detection_dataset_dicts(
        dataset_name,
        filter_empty=False,
        proposal_files=[
            cfg.DATASETS.PROPOSAL_FILES_TEST[list(cfg.DATASETS.TEST).index(x)] for x in dataset_name
        ] if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    if mapper is None:
        mapper = DatasetMapper(cfg, False)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "sampler": InferenceSampler(len(dataset)) if not isinstance(dataset, torchdata.IterableDataset) else None,
    }


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(dataset, *, mapper, sampler=None, batch_size: int = 1,
                                num_workers: int = 0, collate_fn=None) -> torchdata.DataLoader:
    """A loader that goes once over the dataset, in order, split across ranks.

    With a cfg: ``build_detection_test_loader(cfg, "dataset_name")`` uses that dataset's dicts
    (unfiltered) and ``DatasetMapper(cfg, False)``.

    Args:
        dataset: list of dataset dicts or a torch dataset.
        mapper: Called on each element; None: no mapping.
        sampler: Default :class:`InferenceSampler` (each index once over all ranks).
        batch_size: Images per batch on each rank (1 gives the reference's timings).
        num_workers: Worker processes; 0 loads in the main process.
        collate_fn: Default: keep the list.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("sampler must be None when the dataset is an IterableDataset.")
    elif sampler is None:
        sampler = InferenceSampler(len(dataset))
    return torchdata.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=False, num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn)
