"""Train / test loaders: seeded determinism, aspect-ratio grouping, samplers, and the seeds'
training snippet on loader output."""

from __future__ import annotations

import itertools

import pytest
import torch

from workbench.config import get_cfg
from workbench.data import (
    DatasetCatalog,
    DatasetFromList,
    DatasetMapper,
    MapDataset,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from workbench.data import transforms as T
from workbench.data.samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler
from workbench.utils.env import seed_all_rng
from workbench.utils.events import EventStorage


def _cfg(name, *extra):
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", (name,), "INPUT.MIN_SIZE_TRAIN", (24, 32, 40),
                         "INPUT.MAX_SIZE_TRAIN", 100, "SOLVER.IMS_PER_BATCH", 2,
                         "DATALOADER.NUM_WORKERS", 0] + list(extra))
    return cfg


def _fingerprint(batches):
    """What identifies a batch: file names, image sizes, pixel sums (flips change them)."""
    return [[(d["file_name"], tuple(d["image"].shape), int(d["image"].sum()),
              d["instances"].gt_boxes.tensor.sum().item()) for d in batch] for batch in batches]


def _take(cfg, seed, n=6):
    seed_all_rng(seed)  # what default_setup does with cfg.SEED
    loader = build_detection_train_loader(cfg)
    return _fingerprint(itertools.islice(loader, n))


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_is_deterministic_under_a_seed(coco_dataset, workers):
    cfg = _cfg(coco_dataset["name"], "DATALOADER.NUM_WORKERS", workers)
    a = _take(cfg, 7)
    b = _take(cfg, 7)
    assert a == b
    c = _take(cfg, 8)
    assert c != a  # another seed: other order / sizes / flips
    assert all(len(batch) == 2 for batch in a)


def test_explicit_sampler_seed_fixes_the_order(coco_dataset):
    dicts = DatasetCatalog.get(coco_dataset["name"])
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(32, 100)], image_format="BGR")

    def order(seed):
        loader = build_detection_train_loader(dicts, mapper=mapper, sampler=TrainingSampler(len(dicts), seed=seed),
                                              total_batch_size=2, aspect_ratio_grouping=False)
        return [[d["image_id"] for d in b] for b in itertools.islice(loader, 6)]

    assert order(3) == order(3)
    # Two epochs of 4 images in 6 batches of 2 (the sampler is infinite): each image twice
    # in the first 8 draws... and every epoch is a permutation.
    first = order(3)
    flat = [i for b in first for i in b]
    assert sorted(flat[:4]) == sorted(flat[4:8]) == [100, 101, 102, 103]


def test_aspect_ratio_grouping(coco_dataset):
    cfg = _cfg(coco_dataset["name"], "INPUT.MIN_SIZE_TRAIN", (32,))
    seed_all_rng(0)
    for batch in itertools.islice(build_detection_train_loader(cfg), 8):
        landscape = {d["width"] > d["height"] for d in batch}
        assert len(landscape) == 1, [(d["width"], d["height"]) for d in batch]


def test_test_loader_visits_each_image_once_in_order(coco_dataset):
    cfg = _cfg(coco_dataset["name"], "INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 100)
    loader = build_detection_test_loader(cfg, coco_dataset["name"])
    batches = list(loader)
    assert len(loader) == 4 and [len(b) for b in batches] == [1, 1, 1, 1]
    assert [b[0]["image_id"] for b in batches] == [100, 101, 102, 103]
    assert all("instances" not in b[0] for b in batches)
    assert min(batches[0][0]["image"].shape[1:]) == 32


def test_inference_sampler_shards():
    shards = [list(InferenceSampler._get_local_indices(10, 3, r)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_training_sampler_rank_sharding():
    samplers = []
    for rank in range(2):
        s = TrainingSampler(5, seed=1)
        s._rank, s._world_size = rank, 2
        samplers.append(list(itertools.islice(iter(s), 10)))
    full = list(itertools.islice(TrainingSampler(5, seed=1)._infinite_indices(), 20))
    assert samplers[0] == full[0::2] and samplers[1] == full[1::2]


def test_repeat_factor_sampler():
    dicts = [{"annotations": [{"category_id": 0}]}] * 9 + [{"annotations": [{"category_id": 1}]}]
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.5)
    # category 1 is in 10 % of the images: factor sqrt(0.5 / 0.1).
    torch.testing.assert_close(factors, torch.tensor([1.0] * 9 + [5 ** 0.5]))
    draws = list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=0)), 3000))
    assert abs(draws.count(9) / len(draws) - 5 ** 0.5 / (9 + 5 ** 0.5)) < 0.04


def test_filtering_and_empty_dataset_errors(coco_dataset):
    DatasetCatalog.register("only_crowd", lambda: [{"file_name": "x", "annotations": [{"iscrowd": 1, "category_id": 0}]}])
    try:
        with pytest.raises(ValueError, match="No valid data"):
            get_detection_dataset_dicts("only_crowd")
        assert len(get_detection_dataset_dicts("only_crowd", filter_empty=False)) == 1
    finally:
        DatasetCatalog.remove("only_crowd")
    # Every image has 2 instances x 4 visible keypoints.
    assert len(get_detection_dataset_dicts(coco_dataset["name"], min_keypoints=8)) == 4
    with pytest.raises(ValueError, match="No valid data"):
        get_detection_dataset_dicts(coco_dataset["name"], min_keypoints=9)


def test_dataset_from_list_and_map_dataset_fallback():
    ds = DatasetFromList([{"i": i} for i in range(5)])
    assert len(ds) == 5 and ds[3] == {"i": 3}
    ds[3]["i"] = 99  # serialised storage: elements come out as fresh copies
    assert ds[3] == {"i": 3}
    mapped = MapDataset(ds, lambda d: None if d["i"] == 2 else d["i"])
    assert mapped[2] in {0, 1, 3, 4}


def test_training_snippet_on_loader_output(coco_dataset, make_tiny_cfg, keypoint_meta):
    """The seeds' snippet works on mapper output straight from the loader."""
    from workbench.modeling import build_model

    torch.manual_seed(0)
    cfg = make_tiny_cfg("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
                        "DATASETS.TRAIN", (coco_dataset["name"],), "MODEL.KEYPOINT_ON", True,
                        "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 4, "INPUT.MASK_FORMAT", "bitmask")
    seed_all_rng(0)
    data_loader = build_detection_train_loader(cfg)
    model = build_model(cfg)
    inputs = next(iter(data_loader))
    assert {"image", "instances", "sem_seg", "height", "width"} <= set(inputs[0])
    with EventStorage() as storage:
        losses = model(inputs)
    assert {"loss_sem_seg", "loss_cls", "loss_box_reg", "loss_mask", "loss_keypoint",
            "loss_rpn_cls", "loss_rpn_loc"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert "rpn/num_pos_anchors" in storage.latest()


def test_fed_loss_weights_count_images_per_class():
    from workbench.data import DatasetCatalog, MetadataCatalog
    from workbench.data.detection_utils import get_fed_loss_cls_weights

    name = "fed_loss_toy"
    dicts = [{"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 2}]},
             {"annotations": [{"category_id": 2}]},
             {"annotations": []}]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"])
    try:
        w = get_fed_loss_cls_weights(name, freq_weight_power=0.5)
        assert w.tolist() == pytest.approx([1.0, 0.0, 2.0 ** 0.5])
        MetadataCatalog.get(name).set(class_image_count=[{"id": 2, "image_count": 9},
                                                         {"id": 1, "image_count": 4}])
        assert get_fed_loss_cls_weights([name], 0.5).tolist() == [2.0, 3.0]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
