"""The seeds' 'Use Models' snippets, with ``detectron2`` replaced by ``workbench``."""

from __future__ import annotations

import torch

from test_model_e2e import make_inputs, tiny_cfg


def test_build_functions_from_cfg():
    from workbench.modeling import build_backbone, build_model, build_roi_heads

    cfg = tiny_cfg("mask_rcnn_fpn")
    model = build_model(cfg)  # returns a torch.nn.Module
    assert isinstance(model, torch.nn.Module)
    backbone = build_backbone(cfg)
    heads = build_roi_heads(cfg, backbone.output_shape())
    assert set(heads.state_dict()) == {k[len("roi_heads."):] for k in model.state_dict()
                                       if k.startswith("roi_heads.")}


def test_partial_execution_both_revisions():
    from workbench.modeling import build_model
    from workbench.structures import ImageList

    cfg = tiny_cfg("mask_rcnn_fpn")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    inputs = make_inputs(cfg, with_gt=False)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    with torch.no_grad():
        # "images = ImageList.from_tensors(...)  # preprocessed input tensor"
        images = ImageList.from_tensors(
            [(x["image"] - model.pixel_mean) / model.pixel_std for x in inputs],
            model.backbone.size_divisibility,
        )
        # Newer revision.
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features)
        instances, _ = model.roi_heads(images, features, proposals)
        mask_features = [features[f] for f in model.roi_heads.in_features]
        mask_features = model.roi_heads.mask_pooler(mask_features, [x.pred_boxes for x in instances])
        n = sum(len(x) for x in instances)
        assert mask_features.shape == (n, cfg.MODEL.FPN.OUT_CHANNELS, 14, 14)
        # Older revision.
        instances_old = model.roi_heads._forward_box(features, proposals)
        assert [len(x) for x in instances_old] == [len(x) for x in instances]
        for a, b in zip(instances_old, instances):
            torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        mask_features_old = model.roi_heads.mask_pooler(
            [features[f] for f in model.roi_heads.in_features], [x.pred_boxes for x in instances_old]
        )
        torch.testing.assert_close(mask_features_old, mask_features)
        # Partial execution gives what model.inference gives (no postprocessing).
        full = model.inference(inputs, do_postprocess=False)
        for a, b in zip(full, instances):
            torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
            torch.testing.assert_close(a.scores, b.scores)


def test_training_snippet_and_inference_snippet():
    from workbench.modeling import build_model
    from workbench.utils.events import EventStorage

    cfg = tiny_cfg("faster_rcnn_fpn")
    model = build_model(cfg)
    inputs = make_inputs(cfg)
    with EventStorage() as storage:
        losses = model(inputs)
    assert {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} == set(losses)
    assert "rpn/num_pos_anchors" in storage.latest()
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    assert {"instances"} == set(outputs[0])
    inst = outputs[0]["instances"]
    assert {"pred_boxes", "scores", "pred_classes"} == set(inst.get_fields())
