"""The parity harness itself must take fixture kinds it has not seen yet.

More fixtures "of the same kinds (more architectures, other sizes)" are run against the project
from outside the repo. The visible set has no semantic-segmentation-only model, so this test
derives one from ``panoptic_fpn_R_50``: a ``SemanticSegmentor`` is PanopticFPN's backbone and
semantic head, so the reference's features, batch geometry, semantic outputs and semantic loss
are exactly what that model must give. The derived folder (config with the other
meta-architecture, the weights of those two parts, outputs and losses restricted to them) goes
into a temporary ``$WORKBENCH_FIXTURES``, and the whole parity suite runs on it in a subprocess:
every test must pass on it, and each of the checks that apply must have run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reference import fixture_root, read_state_dict

SOURCE = "panoptic_fpn_R_50"
DERIVED = "semantic_R_50_derived"
# What a SemanticSegmentor computes: the backbone and the semantic head, nothing per instance.
KEEP_OUTPUTS = re.compile(r"^(batch/|features_input/|features/|img\d+/(sem_seg|raw/sem_seg))")


def _derive(root: Path) -> Path:
    src = fixture_root() / SOURCE
    out = root / DERIVED
    out.mkdir(parents=True)
    config = (src / "config.yaml").read_text()
    config, n = re.subn(r"META_ARCHITECTURE: PanopticFPN", "META_ARCHITECTURE: SemanticSegmentor", config)
    assert n == 1, f"{SOURCE}/config.yaml: expected one META_ARCHITECTURE: PanopticFPN line"
    (out / "config.yaml").write_text(config)
    meta = json.loads((src / "meta.json").read_text())
    meta.update(fixture=DERIVED, meta_architecture="SemanticSegmentor",
                derived_from=f"{SOURCE} (backbone + sem_seg_head)")
    (out / "meta.json").write_text(json.dumps(meta))
    weights = {k: v for k, v in read_state_dict(src / "model_final.pkl").items()
               if k.startswith(("backbone.", "sem_seg_head.", "pixel_"))}
    torch.save({"model": weights}, out / "model_final.pth")
    (out / "inputs.npz").write_bytes((src / "inputs.npz").read_bytes())
    outputs = dict(np.load(src / "outputs.npz"))
    np.savez(out / "outputs.npz", **{k: v for k, v in outputs.items() if KEEP_OUTPUTS.match(k)})
    for name in ("gt.npz", "gt.json"):
        (out / name).write_bytes((src / name).read_bytes())
    losses = json.loads((src / "losses.json").read_text())
    for result in losses["results"].values():
        result["losses"] = {"loss_sem_seg": result["losses"]["loss_sem_seg"]}
        result["event_storage_scalars"] = {}  # the source's belong to the RPN / ROI heads
        result.pop("rerun_losses", None)
        result.pop("total_loss", None)
    (out / "losses.json").write_text(json.dumps(losses))
    return out


def test_a_semantic_segmentor_fixture_runs_through_the_whole_harness(tmp_path):
    if not (fixture_root() / SOURCE).is_dir():
        pytest.fail(f"{SOURCE} is not in the fixtures ({fixture_root()}): nothing to derive from")
    _derive(tmp_path)
    here = Path(__file__).parent
    env = dict(os.environ, WORKBENCH_FIXTURES=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(here / "test_parity.py"), str(here / "test_parity_segmentation.py")],
        capture_output=True, text=True, env=env, cwd=str(here.parents[1]), timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert not re.search(r"\d+ (failed|errors?|xfailed|xpassed)", log), log[-2000:]
    # The only skips allowed: tests whose fixture kind is absent (no PanopticFPN case here).
    skips = re.findall(r"SKIPPED \[\d+\] (.*)", log)
    assert all("got empty parameter set" in s for s in skips), skips
    # The checks that apply to a semantic segmentor all ran, in both optimisation modes.
    for what in ("features, opt_on", "features, opt_off", "outputs, opt_on", "outputs, opt_off",
                 "losses[gt_masks_bitmask]"):
        assert f"[{DERIVED}] {what}" in log, f"no '{what}' report for {DERIVED}:\n{log[-3000:]}"
    # features, proposals, instances and semantic outputs x 2 modes, batch geometry, losses,
    # and the segmentation suite's "cases exist".
    assert re.search(r"\b11 passed\b", log), log[-2000:]
