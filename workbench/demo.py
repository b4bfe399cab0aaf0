"""``python -m workbench.demo`` (``make demo``): the embedded model, end to end, offline.

Loads workbench's own trained model (``Shapes/panoptic_kp_R_50_FPN_small``: a small Panoptic FPN
with mask and keypoint heads, trained on the procedural shapes dataset; its weights ship in the
package), then writes under ``--output-dir`` (default ``output/``):

* ``val_<i>.png``: ground truth | predicted instances (boxes, masks, keypoints) | panoptic map, for
  a few validation images, each panel captioned. The predictions are the pass that was scored: the
  dataset dict through the evaluator's test-time transform (:func:`scored_pass`);
* ``photo_<name>.png``: the predictions on the photographs shipped in ``workbench/assets/photos``
  (the model never saw a photo: these show how it behaves out of distribution);
* ``trace.png``: the first validation image's scored pass taken apart stage by stage (input, FPN
  features, proposals, detections, a mask's raw logits, keypoint heatmaps, semantic map);
* ``metrics.json`` and ``report.html``: box / mask / keypoint AP, mIoU and PQ on the held-out
  validation images, measured with workbench's own evaluators, next to the project's bars, and AP
  per class (:mod:`workbench.demo_report`; the report embeds every picture as JPEG, under 1 MB).

Another model can be given with ``--config-file`` and ``--weights``; evaluation then needs a
registered dataset (``--dataset``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from workbench.demo_report import BARS, HEADLINE, Figure, flatten, metrics_document, per_class
from workbench.demo_report import write_metrics, write_report

__all__ = ["BARS", "EMBEDDED", "build_cfg", "scored_pass", "validation_panels", "draw_prediction",
           "trace_figure", "evaluate", "main"]

EMBEDDED = "Shapes/panoptic_kp_R_50_FPN_small.yaml"


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    # allow_abbrev=False: an option is spelled out (``--output x`` is an error, not --output-dir).
    p = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--output-dir", default="output", help="where pictures and the report go")
    p.add_argument("--config-file", default=None, help="default: the embedded model's config")
    p.add_argument("--weights", default=None, help="default: the embedded model's packaged weights")
    p.add_argument("--dataset", default="shapes_val", help="registered dataset to draw and evaluate")
    p.add_argument("--val-images", type=int, default=4, help="validation images to draw")
    p.add_argument("--eval-images", type=int, default=500,
                   help="validation images to evaluate (0: skip evaluation)")
    p.add_argument("--photos", default="coffee,chelsea,rocket",
                   help="comma-separated shipped photos to run on ('' for none)")
    p.add_argument("--score-thresh", type=float, default=0.5, help="drawn detections score above this")
    p.add_argument("--device", default=None, help="override MODEL.DEVICE (e.g. cuda)")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="KEY VALUE config overrides, after the options (e.g. MODEL.DEVICE cpu)")
    args = p.parse_args(argv)
    # REMAINDER takes everything after the first KEY, options included: say so rather than
    # hand "--val-images" to the config as a key.
    late = [o for o in args.opts if o.startswith("-")]
    if late:
        p.error(f"options must come before the KEY VALUE config overrides, got {late[0]!r} after "
                f"{args.opts[0]!r}")
    if len(args.opts) % 2:
        p.error(f"config overrides come in KEY VALUE pairs, got {len(args.opts)} words: {args.opts}")
    return args


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from workbench.utils.atomic_files import atomic_write
    from workbench.vis import encode_png

    data = encode_png(rgb, level=6)
    atomic_write(str(path), lambda f: f.write(data), binary=True)


def build_cfg(args: argparse.Namespace):
    from workbench import model_zoo
    from workbench.config import get_cfg

    if args.config_file:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
    else:
        cfg = model_zoo.get_config(EMBEDDED, trained=True)
    if args.weights:
        cfg.MODEL.WEIGHTS = args.weights
    if args.device:
        cfg.MODEL.DEVICE = args.device
    elif cfg.MODEL.DEVICE.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def _hstack(images: List[np.ndarray], gap: int = 6) -> np.ndarray:
    h = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        pad = np.full((h, im.shape[1], 3), 255, np.uint8)
        pad[: im.shape[0]] = im
        parts.append(pad)
        if i + 1 < len(images):
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)


def _captioned(rgb: np.ndarray, caption: str, height: int = 20) -> np.ndarray:
    """``rgb`` with ``caption`` written on a white strip below it."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (rgb.shape[1], height), "white")
    try:
        font = ImageFont.load_default(size=height - 7)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType: the bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(strip).text((4, 2), caption, fill=(0, 0, 0), font=font)
    return np.concatenate([rgb, np.asarray(strip)], axis=0)


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def scored_pass(predictor, dic: Dict[str, Any]):
    """The trace (:func:`workbench.inspect.trace`) of one dataset dict as the evaluator scores
    it: the dict through the cfg's test-time transform (``DatasetMapper(cfg, is_train=False)``,
    what ``build_detection_test_loader`` feeds ``inference_on_dataset``: the resize to
    ``INPUT.MIN_SIZE_TEST``), one image per forward. ``.outputs[0]`` is in the image's pixels."""
    import torch

    from workbench import inspect as wi

    with torch.no_grad():
        return wi.trace(predictor, dic)


def draw_prediction(rgb: np.ndarray, outputs: Dict[str, Any], metadata, score_thresh: float) -> np.ndarray:
    """Predicted instances (boxes, masks, keypoints) over the image, RGB uint8."""
    from workbench.vis import Visualizer

    v = Visualizer(rgb, metadata)
    v.draw_instance_predictions(outputs["instances"].to("cpu"), score_thresh=score_thresh)
    return v.get_output().get_image()


def _count(outputs: Dict[str, Any], score_thresh: float) -> int:
    return int((outputs["instances"].scores > score_thresh).sum())


def validation_panels(dic: Dict[str, Any], outputs: Dict[str, Any], metadata,
                      score_thresh: float) -> List[Tuple[str, np.ndarray]]:
    """(caption, RGB) panels: ground truth, predicted instances, panoptic map (if predicted)."""
    from workbench.vis import Visualizer

    rgb = _read_rgb(dic["file_name"])
    gt = Visualizer(rgb, metadata).draw_dataset_dict(dic).get_image()
    panels = [(f"ground truth: {len(dic.get('annotations', []))} objects", gt),
              (f"prediction: {_count(outputs, score_thresh)} detections > {score_thresh}",
               draw_prediction(rgb, outputs, metadata, score_thresh))]
    if "panoptic_seg" in outputs:
        seg, info = outputs["panoptic_seg"]
        panels.append((f"panoptic: {len(info)} segments",
                       Visualizer(rgb, metadata).draw_panoptic_seg(seg.to("cpu"), info).get_image()))
    return panels


def trace_figure(tr, dic: Dict[str, Any], metadata, score_thresh: float):
    """One validation image taken apart stage by stage, as a PlotImage, from its
    :func:`scored_pass` trace ``tr``."""
    from workbench.vis import PlotImage, Visualizer, pca_rgb

    rgb = _read_rgb(dic["file_name"])
    out = tr.outputs[0]
    inst = out["instances"].to("cpu")
    sx, sy = (1.0 / s for s in tr.preprocess.scales[0])  # original px per input px
    in_h, in_w = tr.preprocess.image_sizes[0]

    fig = PlotImage(2, 4, panel=2.8)
    ax = fig.axes

    def show(a, im, title):
        a.imshow(im)
        a.set_title(title, fontsize=8)
        a.set_axis_off()

    show(ax[0], rgb, f"image {rgb.shape[1]}x{rgb.shape[0]}, resized to {in_w}x{in_h}")
    feats = tr.backbone.features
    names = [k for k in ("p2", "p4") if k in feats] or list(feats)[:2]
    for a, name in zip(ax[1:3], names):
        show(a, pca_rgb(feats[name][0].cpu()), f"{name} {tuple(feats[name].shape[1:])}: PCA to RGB")
    if tr.proposals is not None:
        props = tr.proposals[0].to("cpu")
        v = Visualizer(rgb, metadata)
        v.draw_proposals(props, topk=50, box_scale=float(np.mean([sx, sy])))
        show(ax[3], v.get_output().get_image(), f"top 50 of {len(props)} proposals")
    else:
        ax[3].set_axis_off()
    show(ax[4], draw_prediction(rgb, out, metadata, score_thresh),
         f"{_count(out, score_thresh)} detections > {score_thresh}")
    if tr.mask is not None and len(inst):
        d = tr.detection(0)
        logits = d.mask_logits.cpu().numpy()
        logits = logits[d.cls if logits.shape[0] > 1 else 0]
        lim = float(np.abs(logits).max()) or 1.0
        ax[5].imshow(logits, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax[5].set_title(f"top detection: raw {logits.shape[0]}x{logits.shape[1]} mask logits", fontsize=8)
        ax[5].set_axis_off()
    else:
        ax[5].set_axis_off()
    if inst.has("pred_keypoint_heatmaps") and len(inst):
        hm = inst.pred_keypoint_heatmaps[0].numpy()  # (K, R, R)
        show(ax[6], hm.max(axis=0), f"top detection: {hm.shape[0]} keypoint heatmaps (max)")
    else:
        ax[6].set_axis_off()
    if "sem_seg" in out:
        v = Visualizer(rgb, metadata)
        v.draw_sem_seg(out["sem_seg"].argmax(0).cpu())
        show(ax[7], v.get_output().get_image(), "sem_seg argmax")
    else:
        ax[7].set_axis_off()
    return fig


def evaluate(cfg, model, dataset: str, num_images: int, output_dir: Path) -> Dict[str, Dict[str, float]]:
    """Box / mask / keypoint AP (COCOEvaluator), mIoU (SemSegEvaluator) and PQ
    (COCOPanopticEvaluator) on the first ``num_images`` of ``dataset``."""
    from workbench.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
    from workbench.data.datasets.shapes import register_shapes
    from workbench.evaluation import (COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators,
                                      SemSegEvaluator, inference_on_dataset)

    name = dataset
    meta = MetadataCatalog.get(dataset)
    if meta.get("split", None) is not None and meta.get("num_images", num_images) != num_images:
        # The images are a pure function of (split, seed, index): the first n of a split are the
        # same images under any registration.
        name = f"{dataset}_first{num_images}"
        if name not in DatasetCatalog.list():
            register_shapes(name, meta.split, num_images, meta.seed)
        meta = MetadataCatalog.get(name)
    evaluators = []
    kind = meta.get("evaluator_type", "coco")
    out = str(output_dir / "inference")
    if kind in ("coco", "coco_panoptic_seg"):
        evaluators.append(COCOEvaluator(name, output_dir=out, kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS))
    if kind in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(SemSegEvaluator(name, output_dir=out))
    if kind == "coco_panoptic_seg":
        evaluators.append(COCOPanopticEvaluator(name, out))
    loader = build_detection_test_loader(cfg, name)
    return inference_on_dataset(model, loader, DatasetEvaluators(evaluators))




def _print_metrics(results: Dict[str, Dict[str, float]]) -> None:
    metrics = flatten(results)
    for name, key in HEADLINE.items():
        if key not in metrics:
            continue
        bar = BARS.get(key)
        met = "" if bar is None else f"   (bar {bar:.0f}: {'met' if metrics[key] >= bar else 'NOT met'})"
        print(f"  {name:<13} {metrics[key]:6.1f}{met}")
    for k in sorted(metrics):
        if k.endswith(("/AP50", "/AP75", "/PQ_th", "/PQ_st")):
            print(f"  {k:<18} {metrics[k]:6.1f}")
    classes = per_class(results)
    cols = [c for c in ("box AP", "mask AP", "keypoint AP") if c in classes]
    if cols:
        print("  per class     " + "".join(f"{c:>13}" for c in cols))
        for n in classes[cols[0]]:
            cells = "".join(f"{'-' if classes[c].get(n) is None else f'{classes[c][n]:.1f}':>13}"
                            for c in cols)
            print(f"  {n:<13} {cells}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    from workbench.assets import photo_path
    from workbench.data import DatasetCatalog, MetadataCatalog
    from workbench.engine import DefaultPredictor

    args = _parse(argv)
    logging.getLogger("workbench").setLevel(logging.WARNING)  # the demo prints its own summary
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: --output-dir {out_dir} is a file; it names the folder the demo writes into",
              file=sys.stderr)
        return 2
    try:
        cfg = build_cfg(args)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    predictor = DefaultPredictor(cfg)
    model = predictor.model
    load_s = time.perf_counter() - t0
    metadata = MetadataCatalog.get(args.dataset)
    figures: List[Figure] = []

    # Validation images, the pass that was scored: ground truth | prediction | panoptic. The
    # first image's trace also gives the stage-by-stage picture.
    times = []
    for i, dic in enumerate(DatasetCatalog.get(args.dataset)[: max(args.val_images, 1)]):
        t = time.perf_counter()
        tr = scored_pass(predictor, dic)
        times.append(time.perf_counter() - t)
        if i == 0:
            fig = trace_figure(tr, dic, metadata, args.score_thresh)
            path = out_dir / "trace.png"
            _write_png(path, fig.get_image())
            figures.append(Figure(f"validation image 0, stage by stage: {Path(dic['file_name']).name}",
                                  [("input, FPN features, proposals, detections, mask logits, "
                                    "keypoint heatmaps, semantic map", fig.get_image())],
                                  file=path.name, max_side=960))
            print(f"stage trace -> {path}")
        if i >= args.val_images:
            break
        panels = validation_panels(dic, tr.outputs[0], metadata, args.score_thresh)
        path = out_dir / f"val_{i}.png"
        _write_png(path, _hstack([_captioned(im, caption) for caption, im in panels]))
        figures.append(Figure(f"validation image {i}: {Path(dic['file_name']).name}", panels,
                              file=path.name, max_side=320))
        h, w = panels[0][1].shape[:2]
        print(f"val image {i} ({w}x{h}): {panels[1][0]} -> {path}")
        del tr

    # Photographs: far outside the training distribution (DefaultPredictor: the same test-time
    # resize, from a BGR array).
    for name in [p for p in args.photos.split(",") if p]:
        rgb = _read_rgb(photo_path(name))
        with torch.no_grad():
            outputs = predictor(rgb[:, :, ::-1])  # DefaultPredictor takes BGR, as in detectron2
        caption = f"prediction: {_count(outputs, args.score_thresh)} detections > {args.score_thresh}"
        drawn = draw_prediction(rgb, outputs, metadata, args.score_thresh)
        path = out_dir / f"photo_{name}.png"
        _write_png(path, _captioned(drawn, caption))
        figures.append(Figure(f"photo {name} ({rgb.shape[1]}x{rgb.shape[0]}), out of distribution",
                              [(caption, drawn)], file=path.name, max_side=400))
        print(f"photo {name} ({rgb.shape[1]}x{rgb.shape[0]}): {caption} -> {path}")

    results: Dict[str, Dict[str, float]] = {}
    if args.eval_images > 0:
        print(f"evaluating on {args.eval_images} held-out images of {args.dataset} ...")
        t = time.perf_counter()
        with torch.no_grad():
            results = evaluate(cfg, model, args.dataset, args.eval_images, out_dir)
        print(f"evaluated in {time.perf_counter() - t:.0f} s")
        _print_metrics(results)
    info = {"config": args.config_file or EMBEDDED, "weights": cfg.MODEL.WEIGHTS,
            "weights size (MB)": round(os.path.getsize(cfg.MODEL.WEIGHTS) / 1e6, 1)
            if os.path.isfile(cfg.MODEL.WEIGHTS) else "?",
            "parameters (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "device": cfg.MODEL.DEVICE, "threads": torch.get_num_threads(),
            "build + load (s)": round(load_s, 2),
            "median traced pass per validation image (s)": round(float(np.median(times)), 3),
            "test-time resize": f"shortest edge {cfg.INPUT.MIN_SIZE_TEST}, longest at most "
                                f"{cfg.INPUT.MAX_SIZE_TEST}",
            "dataset": args.dataset, "evaluated images": args.eval_images}
    write_metrics(out_dir / "metrics.json", metrics_document(results, info))
    write_report(out_dir / "report.html", figures, results, info)
    size_kb = (out_dir / "report.html").stat().st_size / 1e3
    print(f"report -> {out_dir / 'report.html'} ({size_kb:.0f} kB); metrics -> {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
