"""The breakdown's identities on the embedded model's real output (boxes and masks): fixing
nothing gives the evaluator's AP50, fixing everything gives 100; per-image results carry every
evaluated detection."""

from __future__ import annotations

import functools

import pytest

from workbench import model_zoo
from workbench.analysis import ERROR_TYPES
from workbench.data import DatasetCatalog, build_detection_test_loader
from workbench.data.datasets.shapes import register_shapes
from workbench.engine import DefaultPredictor
from workbench.evaluation import COCOEvaluator, inference_on_dataset

NAME = "shapes_val_first8_analysis"


@functools.lru_cache(maxsize=None)
def evaluated(out_dir):
    if NAME not in DatasetCatalog.list():
        register_shapes(NAME, "val", 8, 0)
    cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
    cfg.MODEL.DEVICE = "cpu"
    predictor = DefaultPredictor(cfg)
    ev = COCOEvaluator(NAME, tasks=("bbox", "segm"), distributed=False, output_dir=out_dir)
    res = inference_on_dataset(predictor.model, build_detection_test_loader(cfg, NAME), ev)
    return ev, res


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_breakdown_identities_on_the_embedded_model(task, tmp_path_factory):
    ev, res = evaluated(str(tmp_path_factory.getbasetemp() / "analysis_eval"))
    b = ev.error_breakdown(task)
    assert b.ap == pytest.approx(res[task]["AP50"], abs=1e-6)
    assert b.ap_if_fixed(*ERROR_TYPES) == pytest.approx(100.0)
    assert sum(b.counts.values()) > 0 and all(v >= -1e-9 for v in b.dap.values())
    per_image = ev.per_image(task)
    assert len(per_image) == 8
    evaluated_dets = sum(len(r.dt_ids) for r in per_image.values())
    assert evaluated_dets == sum(len(p["instances"]) for p in ev.predictions)


def test_worst_images_are_explained_through_their_trace(tmp_path_factory):
    from workbench.analysis import explain_image, rank_images

    ev, _ = evaluated(str(tmp_path_factory.getbasetemp() / "analysis_eval"))
    b = ev.error_breakdown("bbox")
    ranked = rank_images(ev.per_image("bbox"), b)
    assert len(ranked) == 8 and ranked[0].num_errors >= ranked[-1].num_errors
    assert [s.image_id for s in rank_images(ev.per_image("bbox"), by="ap")][0] in {s.image_id for s in ranked}
    worst = ranked[0]
    assert sum(v for k, v in worst.errors.items() if k != "miss") == worst.num_fp
    assert worst.errors["miss"] <= worst.num_missed
    cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
    cfg.MODEL.DEVICE = "cpu"
    ex = explain_image(ev, DefaultPredictor(cfg), worst.image_id, breakdown=b)
    r = ex.result
    assert len(ex.false_positives) == int(r.fp.sum()) and len(ex.misses) == int(r.missed.sum())
    for (kind, det), d in zip(ex.false_positives, r.fp.nonzero()[0]):
        assert kind in b.counts and det.score == pytest.approx(r.scores[d], abs=1e-6)
        assert det.roi_index is not None and det.match is not None  # provenance and ground truth
    assert all(w.lost_at is not None for _, w in ex.misses)
    assert "false positives" in repr(ex)


def test_embedding_view_of_the_evaluated_detections(tmp_path_factory):
    import numpy as np

    from workbench.analysis import detection_embeddings, pca_2d

    ev, _ = evaluated(str(tmp_path_factory.getbasetemp() / "analysis_eval"))
    b = ev.error_breakdown("bbox")
    cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
    cfg.MODEL.DEVICE = "cpu"
    ids = list(ev.per_image("bbox"))[:3]
    emb = detection_embeddings(ev, DefaultPredictor(cfg), breakdown=b, image_ids=ids, min_score=0.05)
    per_image = ev.per_image("bbox")
    n = sum(int((per_image[i].scores >= 0.05).sum()) for i in ids)
    assert len(emb) == n and emb.embeddings.shape == (n, 256) and emb.xy.shape == (n, 2)
    assert set(emb.kinds) <= {"tp", "ignored", *b.counts}
    assert (emb.true_classes[emb.kinds == "tp"] == emb.pred_classes[emb.kinds == "tp"]).all()
    # PCA: the first axis carries at least as much variance as the second.
    assert emb.xy[:, 0].var() >= emb.xy[:, 1].var()
    np.testing.assert_allclose(np.abs(pca_2d(emb.embeddings)), np.abs(emb.xy))
    pic = emb.plot("error", selected=emb.near(emb.xy[0], 5))
    assert sum(pic.drawn["groups"].values()) == n and pic.to_png_bytes()[:4] == b"\x89PNG"
    g = emb.gallery(emb.near(emb.xy[0], 5))
    assert g.drawn["indices"] == emb.near(emb.xy[0], 5).tolist() and g.to_png_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="color_by"):
        emb.plot("oops")


def test_anchor_coverage_by_object_size():
    import numpy as np

    from workbench.analysis import anchor_coverage
    from workbench import inspect as wi

    cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
    cfg.MODEL.DEVICE = "cpu"
    predictor = DefaultPredictor(cfg)
    if NAME not in DatasetCatalog.list():
        register_shapes(NAME, "val", 8, 0)
    dicts = DatasetCatalog.get(NAME)[:3]
    cov = anchor_coverage(predictor, dicts)
    n = sum(len(d["annotations"]) for d in dicts)
    assert len(cov.best_anchor_iou) == n and cov.anchor_iou.shape == (n, 5)
    assert cov.level_names == ["p2", "p3", "p4", "p5", "p6"]
    # The same numbers as why_missed's best anchors, object by object.
    tr = wi.trace(predictor, dicts[0])
    from workbench.inspect.why_missed import why_missed

    for j in range(len(dicts[0]["annotations"])):
        w = why_missed(tr, 0, j, -1)  # the stage-by-stage answer, whether or not it was missed
        np.testing.assert_allclose([a["iou"] for a in w.anchors], cov.anchor_iou[j], atol=1e-6)
    table = cov.by_size()
    assert table["all"]["objects"] == n == sum(table[s]["objects"] for s in ("small", "medium", "large"))
    assert 0 <= table["all"]["with_anchor"] <= 1 and "best anchor IoU" in cov.summary()


def test_error_explorer_over_the_dataset(tmp_path_factory):
    from workbench import vis

    ev, _ = evaluated(str(tmp_path_factory.getbasetemp() / "analysis_eval"))
    b = ev.error_breakdown("bbox")
    cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
    cfg.MODEL.DEVICE = "cpu"
    ex = vis.ErrorExplorer(ev, breakdown=b, predictor=DefaultPredictor(cfg))
    per_image = ev.per_image("bbox")
    assert len(ex.rows) == sum(int(r.fp.sum() + r.missed.sum()) for r in per_image.values())
    assert ex.last.drawn["error"] is None and "choose one" in ex.info.value
    ex.set(kinds=["cls"], sort="score")
    assert ex.table and all(r["kind"] == "cls" for r in ex.table)
    assert [r["score"] for r in ex.table] == sorted((r["score"] for r in ex.table), reverse=True)
    renders = ex.renders
    ex.set(row=0)
    assert ex.renders == renders + 1  # one redraw per change
    err = ex.last.drawn["error"]
    assert err["kind"] == "cls" and err["image_id"] == ex.table[0]["image_id"]
    assert "from proposal" in ex.info.value and "mislabel" in ex.info.value  # provenance + match
    assert len(ex.last.drawn["boxes"]) == len(per_image[err["image_id"]].gt_ids) + 1
    cls = ex.table[0]["class"]
    ex.set(kinds=[], classes=[cls], row=-1)
    assert ex.table and all(r["class"] == cls for r in ex.table)
    assert ex.controls["row"].options[1][0].startswith("0: ")
    assert ex.png[:4] == b"\x89PNG"
    ex.set(row=0, sort="image")  # a new order: row 0 would be another error, so none is chosen
    assert ex.state["row"] == -1 and ex.last.drawn["error"] is None
    ex.set(sort="score", row=len(ex.table) - 1)  # checked against the table the sort gives
    assert ex.last.drawn["error"]["image_id"] == ex.table[-1]["image_id"]
    with pytest.raises(ValueError, match="same threshold"):
        vis.ErrorExplorer(ev, breakdown=b, iou_thresh=0.75)
