"""``python -m workbench.demo`` (``make demo``): the embedded model, end to end, offline.

Loads workbench's own trained model (``Shapes/panoptic_kp_R_50_FPN_small``: a small Panoptic FPN
with mask and keypoint heads, trained on the procedural shapes dataset; its weights ship in the
package), then writes under ``--output-dir`` (default ``output/``):

* ``val_<i>.png``: ground truth | predicted instances (boxes, masks, keypoints) | panoptic map, for
  a few validation images;
* ``photo_<name>.png``: the predictions on the photographs shipped in ``workbench/assets/photos``
  (the model never saw a photo: these show how it behaves out of distribution);
* ``trace.png``: one image taken apart stage by stage (input, FPN features, proposals,
  detections, a mask's raw logits, keypoint heatmaps, semantic map);
* ``metrics.json`` and ``report.html``: box / mask / keypoint AP, mIoU and PQ on the held-out
  validation images, measured with workbench's own evaluators, next to the project's bars.

Another model can be given with ``--config-file`` and ``--weights``; evaluation then needs a
registered dataset (``--dataset``).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

EMBEDDED = "Shapes/panoptic_kp_R_50_FPN_small.yaml"

# The bars the embedded model must clear on 500 held-out images (issue "The embedded default").
BARS = {"bbox/AP": 70.0, "segm/AP": 65.0, "keypoints/AP": 50.0, "panoptic_seg/PQ": 60.0}


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write beside the target, then rename: a crash never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix + ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def draw_prediction(rgb: np.ndarray, outputs: Dict[str, Any], metadata, score_thresh: float) -> np.ndarray:
    """Predicted instances (boxes, masks, keypoints) over the image, RGB uint8."""
    from workbench.vis import Visualizer

    v = Visualizer(rgb, metadata)
    v.draw_instance_predictions(outputs["instances"].to("cpu"), score_thresh=score_thresh)
    return v.get_output().get_image()


def draw_validation(dic: Dict[str, Any], outputs: Dict[str, Any], metadata, score_thresh: float) -> np.ndarray:
    """Ground truth | predicted instances | panoptic map, side by side."""
    from workbench.vis import Visualizer

    rgb = _read_rgb(dic["file_name"])
    gt = Visualizer(rgb, metadata).draw_dataset_dict(dic).get_image()
    pred = draw_prediction(rgb, outputs, metadata, score_thresh)
    panels = [gt, pred]
    if "panoptic_seg" in outputs:
        seg, info = outputs["panoptic_seg"]
        panels.append(Visualizer(rgb, metadata).draw_panoptic_seg(seg.to("cpu"), info).get_image())
    return _hstack(panels)


def trace_figure(predictor, dic: Dict[str, Any], metadata, score_thresh: float):
    """One validation image taken apart stage by stage, as a PlotImage: the pass that was
    scored (the dataset dict through the evaluator's test-time transform)."""
    import torch

    from workbench import inspect as wi
    from workbench.vis import PlotImage, Visualizer, pca_rgb

    rgb = _read_rgb(dic["file_name"])
    with torch.no_grad():
        tr = wi.trace(predictor, dic)
    out = tr.outputs[0]
    inst = out["instances"].to("cpu")
    sx, sy = (1.0 / s for s in tr.preprocess.scales[0])  # original px per input px

    fig = PlotImage(2, 4, panel=2.8)
    ax = fig.axes

    def show(a, im, title):
        a.imshow(im)
        a.set_title(title, fontsize=8)
        a.set_axis_off()

    show(ax[0], rgb, f"input {rgb.shape[1]}x{rgb.shape[0]}")
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
         f"{int((inst.scores > score_thresh).sum())} detections > {score_thresh}")
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
    return fig, tr


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


def _flat(results: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    return {f"{task}/{k}": float(v) for task, res in results.items() for k, v in res.items()
            if isinstance(v, (int, float))}


def write_report(path: Path, pictures: List[Path], metrics: Dict[str, float], info: Dict[str, Any]) -> None:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{metrics[k]:.1f}</td><td>{BARS[k]:.0f}</td>"
        f"<td>{'yes' if metrics[k] >= BARS[k] else 'NO'}</td></tr>" for k in BARS if k in metrics)
    extra = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td><td></td><td></td></tr>"
                    for k, v in sorted(metrics.items()) if k not in BARS and k.split("/")[1] in
                    ("AP50", "AP75", "mIoU", "SQ", "RQ"))
    figs = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(p.name)}</figcaption></figure>" for p in pictures)
    facts = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in info.items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>workbench demo</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px}}</style></head><body>
<h1>workbench: the embedded model</h1><ul>{facts}</ul>
<h2>Evaluation</h2><table><tr><th>metric</th><th>value</th><th>bar</th><th>met</th></tr>{rows}{extra}</table>
<h2>Pictures</h2>{figs}</body></html>"""
    _atomic_write(path, doc.encode())


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    from workbench.data import DatasetCatalog, MetadataCatalog
    from workbench.engine import DefaultPredictor
    from workbench.vis import encode_png

    args = _parse(argv)
    logging.getLogger("workbench").setLevel(logging.WARNING)  # the demo prints its own summary
    out_dir = Path(args.output_dir)
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
    pictures: List[Path] = []

    # Validation images: ground truth beside predictions.
    dicts = DatasetCatalog.get(args.dataset)[: max(args.val_images, 1)]
    times = []
    for i, dic in enumerate(dicts[: args.val_images]):
        rgb = _read_rgb(dic["file_name"])
        t = time.perf_counter()
        outputs = predictor(rgb[:, :, ::-1])  # DefaultPredictor takes BGR, as in detectron2
        times.append(time.perf_counter() - t)
        path = out_dir / f"val_{i}.png"
        _atomic_write(path, encode_png(draw_validation(dic, outputs, metadata, args.score_thresh)))
        pictures.append(path)
        n = int((outputs["instances"].scores > args.score_thresh).sum())
        print(f"val image {i} ({rgb.shape[1]}x{rgb.shape[0]}, {len(dic['annotations'])} objects): "
              f"{n} detections > {args.score_thresh} -> {path}")

    # Photographs: far outside the training distribution.
    from workbench.assets import photo_path

    for name in [p for p in args.photos.split(",") if p]:
        rgb = _read_rgb(photo_path(name))
        outputs = predictor(rgb[:, :, ::-1])  # DefaultPredictor takes BGR, as in detectron2
        path = out_dir / f"photo_{name}.png"
        _atomic_write(path, encode_png(draw_prediction(rgb, outputs, metadata, args.score_thresh)))
        pictures.append(path)
        n = int((outputs["instances"].scores > args.score_thresh).sum())
        print(f"photo {name} ({rgb.shape[1]}x{rgb.shape[0]}): {n} detections > {args.score_thresh} -> {path}")

    # One image, stage by stage.
    fig, _ = trace_figure(predictor, dicts[0], metadata, args.score_thresh)
    path = out_dir / "trace.png"
    _atomic_write(path, fig.to_png_bytes())
    pictures.insert(0, path)
    print(f"stage trace -> {path}")

    metrics: Dict[str, float] = {}
    if args.eval_images > 0:
        print(f"evaluating on {args.eval_images} held-out images of {args.dataset} ...")
        t = time.perf_counter()
        with torch.no_grad():
            results = evaluate(cfg, model, args.dataset, args.eval_images, out_dir)
        metrics = _flat(results)
        print(f"evaluated in {time.perf_counter() - t:.0f} s")
        for k, bar in BARS.items():
            if k in metrics:
                print(f"  {k:<16} {metrics[k]:6.1f}   (bar {bar:.0f}: {'met' if metrics[k] >= bar else 'NOT met'})")
        for k in sorted(metrics):
            if k.endswith(("/mIoU", "/SQ", "/RQ", "/AP50")):
                print(f"  {k:<16} {metrics[k]:6.1f}")
    info = {"config": args.config_file or EMBEDDED, "weights": cfg.MODEL.WEIGHTS,
            "weights size (MB)": round(os.path.getsize(cfg.MODEL.WEIGHTS) / 1e6, 1)
            if os.path.isfile(cfg.MODEL.WEIGHTS) else "?",
            "parameters (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "device": cfg.MODEL.DEVICE, "threads": torch.get_num_threads(),
            "build + load (s)": round(load_s, 2),
            "median latency per image (s)": round(float(np.median(times)), 3) if times else "?",
            "evaluated images": args.eval_images}
    _atomic_write(out_dir / "metrics.json", json.dumps({"metrics": metrics, "info": info}, indent=1).encode())
    write_report(out_dir / "report.html", pictures, metrics, info)
    print(f"report -> {out_dir / 'report.html'}; metrics -> {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
