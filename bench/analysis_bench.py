"""Cost of the dataset-level analysis, from the evaluator's stored results (no model re-run).

Run ``python bench/analysis_bench.py [--images 500]``: evaluates the embedded Shapes model on
that many validation images once (the model run is not timed), then times, from the
evaluator's results alone, the per-image matching, the TIDE-style breakdown (boxes and masks),
the confusion matrix, the PR curves and the image ranking. Target (the analysis issue): the
whole analysis of 500 images <= 10 s on 2 cores. Writes ``bench/results/analysis.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def run(images: int = 500, threads: int = 2, out_json=None, verbose: bool = True):
    import torch

    from workbench import model_zoo
    from workbench.analysis import confusion_matrix, pr_curves, rank_images
    from workbench.data import DatasetCatalog, build_detection_test_loader
    from workbench.data.datasets.shapes import register_shapes
    from workbench.engine import DefaultPredictor
    from workbench.evaluation import COCOEvaluator, inference_on_dataset

    torch.set_num_threads(threads)
    name = f"shapes_val_first{images}_bench"
    if name not in DatasetCatalog.list():
        register_shapes(name, "val", images, 0)
    cfg = model_zoo.get_config("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
    cfg.MODEL.DEVICE = "cpu"
    predictor = DefaultPredictor(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ev = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=tmp)
        t0 = time.perf_counter()
        res = inference_on_dataset(predictor.model, build_detection_test_loader(cfg, name), ev,
                                   progress=verbose)
        model_s = time.perf_counter() - t0
        times = {}
        t = time.perf_counter()
        per_image = {task: ev.per_image(task) for task in ("bbox", "segm")}
        times["per_image"] = time.perf_counter() - t
        t = time.perf_counter()
        breakdown = {task: ev.error_breakdown(task) for task in ("bbox", "segm")}
        times["error_breakdown"] = time.perf_counter() - t
        k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        t = time.perf_counter()
        cm = confusion_matrix(per_image["bbox"], k, score_thresh=0.5)
        curves = pr_curves(per_image["bbox"], k)
        ranked = rank_images(per_image["bbox"], breakdown["bbox"])
        times["confusion_pr_rank"] = time.perf_counter() - t
        # The dataset explorer: one redraw per chosen row (the first choice of an image also
        # traces it; later ones are cached), and one per filter change.
        from workbench.vis import ErrorExplorer

        ex = ErrorExplorer(ev, breakdown=breakdown["bbox"], predictor=predictor)
        redraws = {"choose_row_first_of_image": [], "choose_row_cached": [], "filter": []}
        seen = set()
        for i in range(min(12, len(ex.table))):
            img = ex.table[i]["image_id"]
            t = time.perf_counter()
            ex.set(row=i)
            redraws["choose_row_cached" if img in seen else "choose_row_first_of_image"].append(
                time.perf_counter() - t)
            seen.add(img)
        for kinds in (["cls"], ["loc"], []):
            t = time.perf_counter()
            ex.set(kinds=kinds, row=-1)
            redraws["filter"].append(time.perf_counter() - t)
    import statistics

    total = sum(times.values())
    explorer_ms = {k: 1000 * statistics.median(v) for k, v in redraws.items() if v}
    result = {"images": images, "threads": threads, "model_seconds_not_counted": model_s,
              "seconds": times, "total_seconds": total, "target_seconds": 10.0,
              "meets_target": total <= 10.0, "AP50": {t: res[t]["AP50"] for t in ("bbox", "segm")},
              "breakdown_ap": {t: b.ap for t, b in breakdown.items()},
              "objects": int(cm.counts[:k].sum()), "worst_image_errors": ranked[0].num_errors,
              "classes_with_curves": len(curves), "explorer_redraw_median_ms": explorer_ms,
              "explorer_target_ms": 200}
    if verbose:
        print(breakdown["bbox"].summary())
        print(f"analysis of {images} images: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items())
              + f" | total {total:.2f}s (target <= 10 s; the model run, {model_s:.0f}s, not counted)")
        print("error explorer redraw (median): " + ", ".join(f"{k} {v:.0f} ms" for k, v in explorer_ms.items())
              + " (target <= 200 ms)")
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "analysis.json"))
    a = ap.parse_args()
    run(images=a.images, threads=a.threads, out_json=a.out)
