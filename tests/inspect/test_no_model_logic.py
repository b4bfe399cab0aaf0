"""workbench.inspect orchestrates and reads what the model recorded; it holds no model logic.

A static check of the inspection layer's source: it imports from ``workbench.modeling`` only the
stage-record API, calls none of the inference functions (selection, NMS, decoding,
postprocessing), and reaches into no private attribute of another object (a model's
``_forward_box``, ``_decode_proposals``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import workbench.inspect

INSPECT = Path(workbench.inspect.__file__).parent
MODULES = sorted(INSPECT.glob("*.py"))
ALLOWED_MODELING = {
    "workbench.modeling.recording", "workbench.modeling.roi_heads.records",
    "workbench.modeling.proposal_generator.rpn_record", "workbench.modeling.poolers",
}
INFERENCE = {
    "find_top_rpn_proposals", "fast_rcnn_inference", "fast_rcnn_inference_single_image",
    "batched_nms", "nms", "detector_postprocess", "sem_seg_postprocess", "apply_deltas",
    "mask_rcnn_inference", "keypoint_rcnn_inference", "combine_semantic_and_instance_outputs",
    "assign_boxes_to_levels", "heatmaps_to_keypoints", "paste_masks_in_image",
}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_inspect_module_holds_no_model_logic(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench.modeling"):
            assert node.module in ALLOWED_MODELING, f"{path.name}:{node.lineno} imports {node.module}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("workbench.modeling"), f"{path.name}:{node.lineno}"
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        assert name not in INFERENCE, f"{path.name}:{node.lineno} uses {name}: model logic"
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            assert owner == "self", f"{path.name}:{node.lineno} reaches into {ast.unparse(node)}"


def test_the_check_sees_model_logic():
    bad = "from workbench.modeling.roi_heads.fast_rcnn import fast_rcnn_inference\nmodel.roi_heads._forward_box(f, p)\n"
    tree = ast.parse(bad)
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "_forward_box"]
    assert found and any(isinstance(n, ast.ImportFrom) and n.module not in ALLOWED_MODELING
                         for n in ast.walk(tree))
