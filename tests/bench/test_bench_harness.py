"""Smoke test of the benchmark harness (bench/run.py): end to end on a tiny input, checking the
structure of the result and the JSON file, never the timings."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import inspect_bench  # noqa: E402
from bench import run as bench_run  # noqa: E402


def _fake_inspect(**kwargs):
    # The real inspection bench needs several full-size forwards (it is covered by its own runs);
    # here only its wiring into the harness is checked, with a result of the same layout.
    clock = {"trace_over_plain": 1.01, "extract_images_per_s": 1.5, "extract_rate_over_plain": 1.1}
    return {"fixture": "mask_rcnn_R_50_FPN", "images": 4, "rounds": kwargs.get("rounds", 9),
            "threads": kwargs["threads"], "wall": dict(clock), "cpu": dict(clock), "kwargs": kwargs}


def test_harness_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inspect_bench, "run", _fake_inspect)
    out = tmp_path / "bench.json"
    res = bench_run.run(height=96, width=128, threads=1, repeats=1, warmup=1, detections=5,
                        pairs=["mask_rcnn"], gemm_size=64, embedded_size=192,
                        inspect_kwargs={"rounds": 1}, out_json=str(out))
    on_disk = json.loads(out.read_text())
    assert set(on_disk) == set(res)
    for key in ("settings", "environment", "gemm", "pairs", "memory", "embedded", "inspect",
                "total_seconds"):
        assert key in res, key
    assert res["gemm"]["gflops_best"] > 0
    pair = res["pairs"]["mask_rcnn"]
    assert pair["detections_ok"], (pair["workbench:mask_rcnn"]["detections"],
                                   pair["torchvision:mask_rcnn"]["detections"])
    for lib in ("workbench", "torchvision"):
        d = pair[f"{lib}:mask_rcnn"]
        assert d["detections"] == 5
        for k in ("backbone_median_s", "full_median_s", "full_gflop", "backbone_gflop",
                  "full_fraction_of_gemm_peak", "backbone_fraction_of_gemm_peak", "parameters"):
            assert d[k] > 0, (lib, k)
        mem = res["memory"][f"{lib}:mask_rcnn"]
        assert mem["peak_rss_mb"] >= mem["after_build_rss_mb"] >= mem["before_build_rss_mb"] > 0
        # ~44 M float32 parameters are ~170 MB: the child's own mark must see them (a mark
        # inherited from the parent process would hide them).
        assert mem["peak_over_before_build_mb"] > 100, mem
    # Same architecture: parameter counts agree (81 vs 91 classes aside, within 2%).
    pw, pt = (pair[f"{lib}:mask_rcnn"]["parameters"] for lib in ("workbench", "torchvision"))
    assert abs(pw - pt) / pt < 0.02, (pw, pt)
    for kind in ("backbone", "full"):
        assert pair["ratio_workbench_over_torchvision"][kind]["of_medians"] > 0
    emb = res["embedded"]
    # The shipped weights, on a shapes image: the trained model finds some of what was drawn.
    assert emb["latency_median_s"] > 0 and emb["weights"].startswith("packaged")
    assert emb["detections"] > 0 and emb["objects_drawn"] > 0, emb
    assert res["inspect"]["kwargs"] == {"rounds": 1, "threads": 1, "verbose": True}
    table = capsys.readouterr().out
    for text in ("mask_rcnn R50-FPN", "full inference (s)", "peak RSS (MB)", "GEMM peak",
                 "embedded model", "trace overhead"):
        assert text in table, text


def test_cli_rejects_unknown_parts():
    with pytest.raises(SystemExit):
        bench_run.main(["--quick", "--skip", "nonsense"])
    with pytest.raises(ValueError, match="Unknown parts"):
        bench_run.run(parts=["compare", "typo"])


def test_bare_recording_patches_every_call_and_restores_them():
    # The inspection bench's "recording off" peer: every module's recording calls replaced by
    # bare ones of the same signatures, for the duration only.
    import torch

    from workbench.model_zoo import get_config
    from workbench.modeling import build_model
    from workbench.modeling import recording
    from workbench.modeling.meta_arch import rcnn

    ctx, n = inspect_bench._bare_recording()
    assert n >= 10
    cfg = get_config("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(["MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
                         "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
                         "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg).eval()
    inputs = [{"image": torch.rand(3, 64, 96) * 255}]
    with torch.no_grad():
        want = model(inputs)[0]["instances"]
        with ctx(), recording.record_stages() as rec:
            assert rcnn.run_stage is not recording.run_stage
            got = model(inputs)[0]["instances"]
    assert rec.entries == [] and rcnn.run_stage is recording.run_stage
    assert torch.equal(got.pred_boxes.tensor, want.pred_boxes.tensor)


def test_analysis_bench_runs_on_a_few_images(tmp_path):
    from bench import analysis_bench

    res = analysis_bench.run(images=4, threads=1, out_json=str(tmp_path / "a.json"), verbose=False)
    assert set(res["seconds"]) == {"per_image", "error_breakdown", "confusion_pr_rank"}
    assert res["breakdown_ap"]["bbox"] == pytest.approx(res["AP50"]["bbox"], abs=1e-6)
    assert json.loads((tmp_path / "a.json").read_text())["images"] == 4
