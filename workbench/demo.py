"""``python -m workbench.demo``: run a detector on one photo and save a picture of what it found.

Until workbench ships its own trained model, the default is the reference Mask R-CNN fixture
(``../shared/fixtures/mask_rcnn_R_50_FPN``): its config, its weights and one of its photos.
Its weights are a calibrated random initialisation, so the detections show that the whole
pipeline runs and matches the reference, not that it recognises anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
_DEFAULT_FIXTURE = _REPO.parent / "shared" / "fixtures" / "mask_rcnn_R_50_FPN"


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=str(_DEFAULT_FIXTURE / "config.yaml"))
    p.add_argument("--weights", default=str(_DEFAULT_FIXTURE / "model_final.pkl"))
    p.add_argument("--input", default=str(_DEFAULT_FIXTURE.parent / "images" / "astronaut.png"),
                   help="an image file (read as RGB)")
    p.add_argument("--output", default="output/demo.png", help="where to write the picture")
    p.add_argument("--class-names", default=None,
                   help="comma-separated class names (default: the fixture's meta.json, if any)")
    p.add_argument("--min-score", type=float, default=0.0, help="draw detections above this score")
    p.add_argument("--device", default=None, help="override MODEL.DEVICE (e.g. cuda)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def _class_names(args: argparse.Namespace) -> Optional[List[str]]:
    if args.class_names:
        return args.class_names.split(",")
    meta = Path(args.config_file).with_name("meta.json")
    if meta.is_file():
        return json.loads(meta.read_text()).get("class_names_used_for_gt")
    return None


def draw_instances(image_rgb: np.ndarray, instances, class_names: Optional[List[str]], path: str,
                   title: str = "") -> None:
    """Save boxes, labels and masks of ``instances`` over ``image_rgb`` as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image_rgb.shape[:2]
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image_rgb)
    ax.set_axis_off()
    cmap = plt.get_cmap("tab10")
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else np.zeros((0, 4))
    scores = instances.scores.numpy() if instances.has("scores") else np.ones(len(boxes))
    classes = instances.pred_classes.numpy() if instances.has("pred_classes") else np.zeros(len(boxes), int)
    masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
    overlay = np.zeros((h, w, 4))
    for i in np.argsort(-scores):
        color = cmap(int(classes[i]) % 10)
        if masks is not None:
            overlay[masks[i]] = (*color[:3], 0.45)
        x0, y0, x1, y1 = boxes[i]
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, lw=1.2))
        name = class_names[classes[i]] if class_names and classes[i] < len(class_names) else str(classes[i])
        ax.text(x0, y0, f"{name} {scores[i]:.2f}", fontsize=6, color="white", va="bottom",
                bbox=dict(facecolor=color, alpha=0.8, pad=0.5, lw=0))
    if masks is not None:
        ax.imshow(overlay)
    if title:
        ax.text(4, h - 4, title, fontsize=7, color="white", va="bottom",
                bbox=dict(facecolor="black", alpha=0.6, pad=1, lw=0))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a crash never leaves half a PNG behind.
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from PIL import Image

    from workbench.config import get_cfg
    from workbench.engine import DefaultPredictor

    args = _parse(argv)
    for f in (args.config_file, args.weights, args.input):
        if not Path(f).is_file():
            print(f"error: {f} does not exist. Give --config-file/--weights/--input, or put the "
                  f"reference fixtures at {_DEFAULT_FIXTURE.parent}.", file=sys.stderr)
            return 2
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.MODEL.WEIGHTS = args.weights
    if args.device:
        cfg.MODEL.DEVICE = args.device
    cfg.merge_from_list(args.opts)
    cfg.freeze()

    t0 = time.perf_counter()
    predictor = DefaultPredictor(cfg)
    t1 = time.perf_counter()
    rgb = np.asarray(Image.open(args.input).convert("RGB"))
    outputs = predictor(rgb[:, :, ::-1])  # DefaultPredictor takes BGR, like OpenCV images
    t2 = time.perf_counter()
    instances = outputs["instances"].to("cpu")
    instances = instances[instances.scores >= args.min_score]
    summary = (f"{cfg.MODEL.META_ARCHITECTURE}: {len(instances)} detections on "
               f"{Path(args.input).name} ({rgb.shape[1]}x{rgb.shape[0]}) in {t2 - t1:.2f} s")
    draw_instances(rgb, instances, _class_names(args), args.output, title=summary)
    print(f"built + loaded in {t1 - t0:.2f} s; {summary}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
