"""Fixture models for the benches: build from a reference folder's config and load its weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """``$WORKBENCH_FIXTURES``, else ``<repo>/../shared/fixtures``."""
    return Path(os.environ.get("WORKBENCH_FIXTURES", REPO.parent / "shared" / "fixtures"))


def build_fixture_model(fixture: str, device: Optional[str] = None) -> Tuple[object, torch.nn.Module]:
    """(cfg, eval-mode model with the fixture's weights) for a folder such as "mask_rcnn_R_50_FPN".

    Weights come from the folder, or from the folder its meta.json names in
    ``weights.same_as_fixture``; they load through the project's checkpointer.
    """
    from workbench.checkpoint import DetectionCheckpointer
    from workbench.config import get_cfg
    from workbench.modeling import build_model

    folder = fixtures_dir() / fixture
    cfg = get_cfg()
    cfg.merge_from_file(str(folder / "config.yaml"))
    cfg.MODEL.DEVICE = device or "cpu"
    model = build_model(cfg).eval()
    weights = folder / "model_final.pkl"
    if not weights.is_file():
        other = json.loads((folder / "meta.json").read_text())["weights"]["same_as_fixture"]
        weights = fixtures_dir() / other / "model_final.pkl"
    DetectionCheckpointer(model).load(str(weights))
    return cfg, model
