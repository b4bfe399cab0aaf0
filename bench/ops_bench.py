"""The pure-PyTorch ops of rotated detection and deformable convolution, against their upright /
plain peers in the same process, on CPU.

Run ``python bench/ops_bench.py [--threads 2] [--rounds 7]`` (prints a table, writes
``bench/results/ops.json``). Each pair runs alternately (A B A B ...) after a warm-up, and the
figure is the ratio of medians (subject / peer):

* ``pairwise_iou_rotated`` of 2000 proposals x 50 ground-truth boxes vs the upright
  ``pairwise_iou`` of the same boxes at angle 0 (what an RRPN / RROIHeads matching step costs
  over a Faster R-CNN one);
* ``nms_rotated`` of 2000 scored boxes vs torchvision's ``nms`` of the same boxes at angle 0;
* ``ROIAlignRotated`` of 512 ROIs on a (1, 256, 64, 96) map vs ``ROIAlign(aligned=True)``;
* ``DeformConv`` 3x3 256 -> 256 on (1, 256, 64, 96) with random offsets vs ``nn.Conv2d``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from torchvision.ops import nms  # noqa: E402

from workbench.layers import (DeformConv, ROIAlign, ROIAlignRotated, nms_rotated,  # noqa: E402
                              pairwise_iou_rotated)
from workbench.structures import Boxes, pairwise_iou  # noqa: E402


def _random_rotated(n: int, g: torch.Generator, size: float = 800.0) -> torch.Tensor:
    """(n, 5) boxes (xc, yc, w, h, angle) inside a size x size image, clustered like proposals."""
    centres = torch.rand(n, 2, generator=g) * size
    wh = 16 + torch.rand(n, 2, generator=g) * 200
    angle = (torch.rand(n, 1, generator=g) - 0.5) * 180
    return torch.cat([centres, wh, angle], dim=1)


def _upright(rotated: torch.Tensor) -> torch.Tensor:
    """The same boxes at angle 0, as XYXY."""
    c, wh = rotated[:, :2], rotated[:, 2:4]
    return torch.cat([c - wh / 2, c + wh / 2], dim=1)


def _pair(subject: Callable[[], object], peer: Callable[[], object], rounds: int) -> Dict[str, float]:
    subject(), peer()  # warm-up
    ts, tp = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        subject()
        ts.append(time.perf_counter() - t)
        t = time.perf_counter()
        peer()
        tp.append(time.perf_counter() - t)
    s, p = statistics.median(ts), statistics.median(tp)
    return {"subject_ms": 1000 * s, "peer_ms": 1000 * p, "ratio": s / p}


def run(threads: int = 2, rounds: int = 7) -> Dict[str, Dict[str, float]]:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    results: Dict[str, Dict[str, float]] = {}

    proposals, gt = _random_rotated(2000, g), _random_rotated(50, g)
    up_p, up_g = Boxes(_upright(proposals)), Boxes(_upright(gt))
    flat_p, flat_g = proposals.clone(), gt.clone()
    flat_p[:, 4] = 0
    flat_g[:, 4] = 0
    results["iou rotated / upright (2000 x 50)"] = _pair(
        lambda: pairwise_iou_rotated(gt, proposals), lambda: pairwise_iou(up_g, up_p), rounds)
    results["iou rotated at angle 0 / upright"] = _pair(
        lambda: pairwise_iou_rotated(flat_g, flat_p), lambda: pairwise_iou(up_g, up_p), rounds)

    scores = torch.rand(2000, generator=g)
    results["nms_rotated / torchvision nms (2000, 0.7)"] = _pair(
        lambda: nms_rotated(proposals, scores, 0.7), lambda: nms(_upright(flat_p), scores, 0.7),
        rounds)

    feats = torch.randn(1, 256, 64, 96, generator=g)
    rois = _random_rotated(512, g, size=96 * 16)
    rois5 = torch.cat([torch.zeros(512, 1), rois], dim=1)
    rois_up = torch.cat([torch.zeros(512, 1), _upright(rois)], dim=1)
    rot_pool = ROIAlignRotated((7, 7), spatial_scale=1 / 16, sampling_ratio=2)
    up_pool = ROIAlign((7, 7), spatial_scale=1 / 16, sampling_ratio=2, aligned=True)
    with torch.no_grad():
        results["ROIAlignRotated / ROIAlign (512 ROIs, 256 ch)"] = _pair(
            lambda: rot_pool(feats, rois5), lambda: up_pool(feats, rois_up), rounds)

        deform = DeformConv(256, 256, kernel_size=3, padding=1, bias=False)
        plain = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False)
        offset = torch.randn(1, 18, 64, 96, generator=g)
        results["DeformConv / Conv2d (3x3, 256 ch, 64x96)"] = _pair(
            lambda: deform(feats, offset), lambda: plain(feats), rounds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results = run(args.threads, args.rounds)
    width = max(len(k) for k in results)
    for name, r in results.items():
        print(f"{name:<{width}}  {r['subject_ms']:9.2f} ms  {r['peer_ms']:9.2f} ms  "
              f"{r['ratio']:7.2f}x")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "ops.json.tmp"
    tmp.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds,
                               "results": results}, indent=1))
    tmp.replace(out / "ops.json")


if __name__ == "__main__":
    main()
