"""The procedural shapes dataset: determinism, ground-truth consistency, cache, registration,
COCO export, and the shipped Panoptic FPN config training on it."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from workbench.data.datasets import shapes as S
from workbench.structures import BoxMode

N_IMAGES = 12


@pytest.fixture(scope="module")
def samples():
    return [S.generate_shapes_image([7, i]) for i in range(N_IMAGES)]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("shapes_cache"))
    return cache, S.get_shapes_dicts("unit", 4, seed=3, cache_dir=cache)


def _decode_polygons(polys, h, w):
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, h, w)))


def test_same_seed_same_image_and_record():
    img_a, rec_a = S.generate_shapes_image(123)
    img_b, rec_b = S.generate_shapes_image(np.random.default_rng(123))
    assert np.array_equal(img_a, img_b)
    assert np.array_equal(rec_a["sem_seg"], rec_b["sem_seg"])
    assert np.array_equal(rec_a["pan_seg"], rec_b["pan_seg"])
    assert rec_a["annotations"] == rec_b["annotations"]
    img_c, _ = S.generate_shapes_image(124)
    assert img_a.shape != img_c.shape or not np.array_equal(img_a, img_c)


def test_image_format_and_sizes(samples):
    for img, rec in samples:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert img.shape[:2] == (rec["height"], rec["width"])
        assert 256 <= rec["height"] <= 384 and 256 <= rec["width"] <= 384
        assert 1 <= len(rec["annotations"]) <= 7
    img, rec = S.generate_shapes_image(5, height=200, width=300, num_shapes=2)
    assert img.shape == (200, 300, 3) and len(rec["annotations"]) <= 2


def test_boxes_masks_and_polygons_agree(samples):
    n_cls = len(S.THING_CLASSES)
    for _, rec in samples:
        h, w = rec["height"], rec["width"]
        for k, ann in enumerate(rec["annotations"]):
            assert ann["iscrowd"] == 0 and ann["bbox_mode"] == BoxMode.XYWH_ABS
            assert 0 <= ann["category_id"] < n_cls
            mask = rec["pan_seg"] == k + 1  # the visible part of instance k
            area = int(mask.sum())
            assert area >= 100, f"instance {k} is nearly hidden ({area} px)"
            ys, xs = np.nonzero(mask)
            x, y, bw, bh = ann["bbox"]
            # The box is the tight box of the visible mask, in continuous coordinates.
            assert (x, y, x + bw, y + bh) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            poly_mask = _decode_polygons(ann["segmentation"], h, w).astype(bool)
            iou = (poly_mask & mask).sum() / (poly_mask | mask).sum()
            assert iou > 0.9, f"polygons of instance {k} match its mask with IoU {iou:.3f}"


def test_keypoints_inside_image_and_visibility(samples):
    for _, rec in samples:
        h, w = rec["height"], rec["width"]
        for k, ann in enumerate(rec["annotations"]):
            kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(len(S.KEYPOINT_NAMES), 3)
            assert np.all((kps[:, 0] >= 0) & (kps[:, 0] <= w) & (kps[:, 1] >= 0) & (kps[:, 1] <= h))
            assert set(kps[:, 2].tolist()) <= {1.0, 2.0}
            top, right, bottom, left, centre = kps[:, :2]
            # Axis points: straight above / right of / below / left of the centre.
            assert top[1] < centre[1] < bottom[1] and left[0] < centre[0] < right[0]
            assert abs(top[0] - centre[0]) < 1e-2 and abs(left[1] - centre[1]) < 1e-2
            # Hidden points are exactly those under the visible mask of a later shape.
            for (x, y, v) in kps:
                owner = rec["pan_seg"][min(int(y), h - 1), min(int(x), w - 1)]
                covered = 1 <= owner <= len(rec["annotations"]) and owner > k + 1
                assert v == (1 if covered else 2)


def test_keypoints_follow_horizontal_flip():
    names = S.KEYPOINT_NAMES
    flip = {a: b for a, b in S.KEYPOINT_FLIP_MAP} | {b: a for a, b in S.KEYPOINT_FLIP_MAP}
    assert all(a in names and b in names for a, b in S.KEYPOINT_FLIP_MAP)
    perm = [names.index(flip.get(n, n)) for n in names]
    assert sorted(perm) == list(range(len(names))) and [perm[p] for p in perm] == list(range(len(names)))
    width = 300.0
    for cls_name in S.THING_CLASSES:
        for theta in (0.0, 0.3, 1.1):
            cx, cy, r = 120.0, 140.0, 40.0
            verts = S._shape_vertices(cls_name, cx, cy, r, theta)
            kps = S._axis_keypoints(cls_name, verts, cx, cy, r)
            mirrored = None if verts is None else np.stack([width - verts[:, 0], verts[:, 1]], 1)
            kps_m = S._axis_keypoints(cls_name, mirrored, width - cx, cy, r)
            expected = np.stack([width - kps[:, 0], kps[:, 1]], 1)[perm]
            np.testing.assert_allclose(kps_m, expected, atol=1e-6, err_msg=cls_name)


def test_semantic_and_panoptic_labels(samples):
    for _, rec in samples:
        sem, pan = rec["sem_seg"], rec["pan_seg"]
        assert sem.dtype == np.uint8 and sem.max() < len(S.STUFF_CLASSES)
        # Label 0 ("things") exactly where a shape is visible.
        things = (pan >= 1) & (pan <= len(rec["annotations"]))
        assert np.array_equal(sem == 0, things)
        stuff_present = [s for s in rec["segments_info"] if not s["isthing"]]
        assert 2 <= len(stuff_present) <= 3
        for s in rec["segments_info"]:
            assert s["area"] == int((pan == s["id"]).sum()) > 0
            if not s["isthing"]:
                assert np.all(sem[pan == s["id"]] == s["category_id"])
        assert sum(s["area"] for s in rec["segments_info"]) == pan.size  # no void pixel


def test_mask_to_polygons_keeps_holes():
    yy, xx = np.mgrid[0:80, 0:90] + 0.5
    d = np.hypot(xx - 40, yy - 38)
    ring = (d < 30) & (d >= 14)
    square_with_two_holes = np.zeros((80, 90), bool)
    square_with_two_holes[5:70, 8:80] = True
    square_with_two_holes[20:30, 20:35] = False
    square_with_two_holes[40:60, 50:70] = False
    two_parts = np.zeros((80, 90), bool)
    two_parts[2:10, 2:12] = True
    two_parts[50:78, 60:88] = True
    for mask in (ring, square_with_two_holes, two_parts):
        polys = S.mask_to_polygons(mask)
        decoded = _decode_polygons(polys, *mask.shape).astype(bool)
        iou = (decoded & mask).sum() / (decoded | mask).sum()
        assert iou > 0.97, iou
        # Holes are cut in, so the polygon area (what COCO export reports) is the mask area.
        area = sum(abs(S._signed_area(np.asarray(p).reshape(-1, 2))) for p in polys)
        assert abs(area - mask.sum()) < 0.03 * mask.sum()
    assert len(S.mask_to_polygons(two_parts)) == 2
    assert S.mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_cache_files_and_dicts(cached):
    cache, dicts = cached
    folder = S.shapes_cache_dir("unit", 3, cache)
    assert len(dicts) == 4 and [d["image_id"] for d in dicts] == [0, 1, 2, 3]
    for i, d in enumerate(dicts):
        assert d["file_name"].startswith(folder)
        img = np.asarray(Image.open(d["file_name"]))
        expected_img, expected = S.generate_shapes_image(S._image_seed("unit", 3, i))
        assert np.array_equal(img, expected_img)
        assert img.shape[:2] == (d["height"], d["width"])
        sem = np.asarray(Image.open(d["sem_seg_file_name"]))
        assert sem.ndim == 2 and np.array_equal(sem, expected["sem_seg"])
        rgb = np.asarray(Image.open(d["pan_seg_file_name"])).astype(np.int64)
        assert np.array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], expected["pan_seg"])
        assert len(d["annotations"]) == len(expected["annotations"])
        for ann, exp in zip(d["annotations"], expected["annotations"]):
            assert ann["bbox_mode"] is BoxMode.XYWH_ABS
            assert ann["segmentation"] == exp["segmentation"] and ann["keypoints"] == exp["keypoints"]
    # A second call reads the cache; a longer split extends it; no temporary file is left.
    assert S.get_shapes_dicts("unit", 4, seed=3, cache_dir=cache) == dicts
    assert S.get_shapes_dicts("unit", 2, seed=3, cache_dir=cache) == dicts[:2]
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp")]
    # Other seeds and splits draw other images.
    other = S.get_shapes_dicts("unit", 1, seed=4, cache_dir=cache)[0]
    assert other["annotations"] != dicts[0]["annotations"]


def test_bitmask_variant_matches_polygons(cached):
    cache, dicts = cached
    rle_dicts = S.get_shapes_dicts("unit", 4, seed=3, cache_dir=cache, mask_format="bitmask")
    for d, dr in zip(dicts, rle_dicts):
        pan = np.asarray(Image.open(d["pan_seg_file_name"])).astype(np.int64)[..., 0]
        for k, (a, ar) in enumerate(zip(d["annotations"], dr["annotations"])):
            assert isinstance(ar["segmentation"], dict) and a["bbox"] == ar["bbox"]
            assert np.array_equal(mask_util.decode(ar["segmentation"]).astype(bool), pan == k + 1)


def test_panoptic_json(cached):
    cache, dicts = cached
    folder = S.shapes_cache_dir("unit", 3, cache)
    with open(os.path.join(folder, "panoptic_4.json")) as f:
        pan = json.load(f)
    cats = {c["id"]: c for c in pan["categories"]}
    meta = S.get_shapes_metadata()
    for dataset_id, contiguous in meta["thing_dataset_id_to_contiguous_id"].items():
        assert cats[dataset_id]["isthing"] == 1 and cats[dataset_id]["name"] == S.THING_CLASSES[contiguous]
    for dataset_id, contiguous in meta["stuff_dataset_id_to_contiguous_id"].items():
        if contiguous:
            assert cats[dataset_id]["isthing"] == 0 and cats[dataset_id]["name"] == S.STUFF_CLASSES[contiguous]
    assert [a["image_id"] for a in pan["annotations"]] == [d["image_id"] for d in dicts]
    for ann, d in zip(pan["annotations"], dicts):
        rgb = np.asarray(Image.open(os.path.join(folder, ann["file_name"]))).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        assert sorted(s["id"] for s in ann["segments_info"]) == sorted(np.unique(ids).tolist())


def test_register_and_coco_round_trip(tmp_path):
    from workbench.data.catalog import DatasetCatalog, MetadataCatalog
    from workbench.data.datasets import convert_to_coco_json, load_coco_json

    name = "shapes_unit_roundtrip"
    S.register_shapes(name, "unit", 3, seed=3, cache_dir=str(tmp_path / "cache"))
    try:
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == S.THING_CLASSES and meta.stuff_classes[0] == "things"
        assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
        assert meta.keypoint_flip_map == [("left", "right")]
        assert not os.path.exists(meta.panoptic_json)  # lazy: nothing drawn yet
        dicts = DatasetCatalog.get(name)
        assert os.path.exists(meta.panoptic_json)
        out = str(tmp_path / "coco.json")
        convert_to_coco_json(name, out, allow_cached=False)
        loaded = load_coco_json(out, str(tmp_path), None, extra_annotation_keys=None)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert [d["image_id"] for d in loaded] == [d["image_id"] for d in dicts]
    for d, dl in zip(dicts, loaded):
        assert dl["file_name"] == d["file_name"] and (dl["height"], dl["width"]) == (d["height"], d["width"])
        assert len(dl["annotations"]) == len(d["annotations"])
        for a, al in zip(d["annotations"], dl["annotations"]):
            assert al["category_id"] == a["category_id"] + 1  # dataset ids, as no name was given
            np.testing.assert_allclose(al["bbox"], a["bbox"], atol=1e-3)
            np.testing.assert_allclose(al["keypoints"], a["keypoints"], atol=1e-6)
            assert [list(p) for p in al["segmentation"]] == a["segmentation"]


def test_default_splits_are_registered_lazily():
    import workbench.data.datasets  # noqa: F401  (registers the default names)
    from workbench.data.catalog import DatasetCatalog, MetadataCatalog

    for name in ("shapes_train", "shapes_val"):
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).thing_classes == S.THING_CLASSES
    assert MetadataCatalog.get("shapes_val").panoptic_json.endswith("panoptic_500.json")


def test_shipped_config_trains_on_mapped_shapes(cached):
    """The model-zoo config builds, and one SGD step on DatasetMapper output gives finite losses
    for every head (box, mask, keypoint, RPN and semantic)."""
    from workbench import model_zoo
    from workbench.data.dataset_mapper import DatasetMapper
    from workbench.modeling import build_model
    from workbench.utils.events import EventStorage

    cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(S.STUFF_CLASSES)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(S.THING_CLASSES)
    assert cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS == len(S.KEYPOINT_NAMES)
    assert len(cfg.TEST.KEYPOINT_OKS_SIGMAS) == len(S.KEYPOINT_NAMES)
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TRAIN = (256,)
    torch.manual_seed(0)
    _, dicts = cached
    mapper = DatasetMapper(cfg, is_train=True)
    assert mapper.keypoint_hflip_indices.tolist() == [0, 3, 2, 1, 4]  # from the flip map
    batch = [mapper(dict(d)) for d in dicts[:2]]
    for b in batch:
        assert b["sem_seg"].shape == b["image"].shape[1:]
        assert b["instances"].gt_keypoints.tensor.shape[1:] == (5, 3)
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        losses = model(batch)
    expected = {"loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
                "loss_mask", "loss_keypoint"}
    assert expected <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_ground_truth_as_predictions_scores_perfectly(tmp_path):
    """An oracle scores AP 100 (box, mask, keypoints), mIoU 100 and PQ 100 with the project's
    evaluators: the exported ground truth (COCO json, keypoint offsets, semantic PNGs, panoptic
    PNGs and json) agrees with itself and with the model's output conventions."""
    from workbench.data.catalog import DatasetCatalog, MetadataCatalog
    from workbench.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
    from workbench.structures import Boxes, Instances

    name = "shapes_unit_oracle"
    S.register_shapes(name, "unit", 3, seed=3, cache_dir=str(tmp_path / "cache"))
    try:
        dicts = DatasetCatalog.get(name)
        rle_dicts = S.get_shapes_dicts("unit", 3, seed=3, cache_dir=str(tmp_path / "cache"),
                                       mask_format="bitmask")
        evaluators = [
            COCOEvaluator(name, distributed=False, output_dir=str(tmp_path / "coco"),
                          kpt_oks_sigmas=S.KEYPOINT_OKS_SIGMAS),
            SemSegEvaluator(name, distributed=False),
            COCOPanopticEvaluator(name, str(tmp_path / "pan")),
        ]
        for ev in evaluators:
            ev.reset()
        for d, dr in zip(dicts, rle_dicts):
            h, w = d["height"], d["width"]
            anns = dr["annotations"]
            inst = Instances((h, w))
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
            inst.scores = torch.linspace(1.0, 0.9, len(anns))
            inst.pred_classes = torch.tensor([a["category_id"] for a in anns])
            inst.pred_masks = torch.from_numpy(
                np.stack([mask_util.decode(a["segmentation"]) for a in anns])).bool()
            kps = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32).reshape(len(anns), -1, 3)
            kps[:, :, 2] = 1.0  # the model's third column is a score
            inst.pred_keypoints = kps
            sem = np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64)
            logits = torch.nn.functional.one_hot(torch.from_numpy(sem), len(S.STUFF_CLASSES))
            rgb = np.asarray(Image.open(d["pan_seg_file_name"])).astype(np.int64)
            pan = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
            segments = []  # PanopticFPN's output convention
            for s in d["segments_info"]:
                info = {"id": s["id"], "isthing": s["isthing"], "category_id": s["category_id"]}
                info.update({"score": 1.0, "instance_id": s["id"] - 1} if s["isthing"] else {"area": s["area"]})
                segments.append(info)
            output = {"instances": inst, "sem_seg": logits.permute(2, 0, 1).float(),
                      "panoptic_seg": (torch.from_numpy(pan).int(), segments)}
            for ev in evaluators:
                ev.process([d], [output])
        results = {}
        for ev in evaluators:
            results.update(ev.evaluate())
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    for task in ("bbox", "segm", "keypoints"):
        assert results[task]["AP"] == pytest.approx(100.0), (task, results[task])
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)
