"""roi_features(): boxes in original pixels are mapped through the resize, pooled by the model's rule."""

from __future__ import annotations

import torch

from inspect_fixtures import fixture, traced
from workbench import inspect as wi
from workbench.modeling.poolers import ROIPooler


def test_original_pixel_boxes_pool_what_the_model_pooled():
    # Inputs whose "height"/"width" differ from the image: the mapping matters.
    model, inputs, _ = fixture("mask_rcnn_R_50_FPN_rescale")
    tr = traced("mask_rcnn_R_50_FPN_rescale")
    assert any(s != (1.0, 1.0) for s in tr.preprocess.scales)
    stage = tr.box.stages[0]
    sel = torch.arange(0, 1000, 50)
    props = [p.proposal_boxes.tensor[sel] for p in tr.proposals]
    # In input pixels: the very same ROIs, so the very same pooled features.
    rf = wi.roi_features(model, tr, props, coords="input")
    rows = torch.cat([sel + 1000 * i for i in range(len(props))])
    assert torch.equal(rf.pooled, stage.pooled[rows])
    assert torch.equal(rf.level, stage.pooler_level[rows])
    torch.testing.assert_close(rf.embeddings, stage.embeddings[rows], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rf.logits, stage.logits[rows], rtol=1e-4, atol=1e-5)
    # In original pixels: divide by the scale first; the layer maps them back.
    original = [tr.preprocess.to_original(b, i) for i, b in enumerate(props)]
    for i, (o, b) in enumerate(zip(original, props)):
        sx, sy = tr.preprocess.scales[i]
        (h, w), (oh, ow) = tr.preprocess.image_sizes[i], tr.preprocess.original_sizes[i]
        assert sx == w / ow and sy == h / oh
        torch.testing.assert_close(o[:, 0::2] * sx, b[:, 0::2])
    rf2 = wi.roi_features(model, tr, original)
    torch.testing.assert_close(rf2.boxes[0], props[0], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(rf2.pooled, rf.pooled, rtol=1e-4, atol=1e-4)


def test_roi_features_from_raw_inputs_and_other_poolers():
    model, inputs, _ = fixture("mask_rcnn_R_50_FPN")
    one = inputs[:1]
    boxes = torch.tensor([[0.0, 0.0, 60.0, 60.0], [10.0, 10.0, 500.0, 400.0]])
    rf = wi.roi_features(model, one, boxes)
    assert rf.pooled.shape == (2, 64, 7, 7) and rf.embeddings.shape == (2, 128)
    assert rf.level.tolist() == [0, 2]  # small box -> p2; large -> p4 (canonical 224 -> level 4)
    mask = wi.roi_features(model, one, boxes, pooler="mask")
    assert mask.pooled.shape == (2, 64, 14, 14) and mask.embeddings is None


def test_c4_and_custom_pooler():
    model, inputs, _ = fixture("faster_rcnn_R_50_C4")
    tr = traced("faster_rcnn_R_50_C4")
    props = [tr.proposals[0].proposal_boxes.tensor[:5]]
    rf = wi.roi_features(model, tr, props, coords="input")
    assert torch.equal(rf.pooled, tr.box.stages[0].pooled[:5]) and rf.level is None
    torch.testing.assert_close(rf.embeddings, tr.box.stages[0].embeddings[:5], rtol=1e-4, atol=1e-5)
    retina, rinputs, _ = fixture("retinanet_R_50_FPN")
    rtr = traced("retinanet_R_50_FPN")
    pooler = ROIPooler(output_size=5, scales=(1 / 8, 1 / 16, 1 / 32), sampling_ratio=0,
                       pooler_type="ROIAlignV2", canonical_level=4)
    rf = wi.roi_features(retina, rtr, [torch.tensor([[0.0, 0.0, 300.0, 300.0]])] * 2,
                         pooler=pooler, in_features=["p3", "p4", "p5"])
    assert rf.pooled.shape == (2, 64, 5, 5) and rf.embeddings is None
