"""The CUDA bench's harness (bench/cuda_bench.py), on the CPU: its wiring, result layout and target
logic, and its polite exit without a GPU. The GPU figures themselves come from bench/gpu_check.sh."""

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import cuda_bench  # noqa: E402


def test_without_cuda_it_says_so_and_measures_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "cuda.json"
    assert cuda_bench.main(["--out", str(out)]) == 0
    assert cuda_bench.NO_CUDA in capsys.readouterr().out
    assert not out.exists()


def test_harness_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "cuda.json"
    res = cuda_bench.run(device="cpu", height=64, width=96, batches=(1, 2), modes=("fp32", "bf16_cl"),
                         pairs=["mask_rcnn"], detections=5, latency_rounds=2, throughput_rounds=1,
                         warmup=1, inspect=False, out_json=str(out), verbose=False)
    assert json.loads(out.read_text()).keys() == res.keys()
    pair = res["pairs"]["mask_rcnn"]
    for batch in (1, 2):
        entry = pair[f"fp32/batch{batch}"]
        for lib in ("workbench", "torchvision"):
            d = entry[lib]
            assert d["detections"] == [5] * batch and d["detections_ok"], d
            assert len(d["seconds"]) == (2 if batch == 1 else 1) and d["median_s"] > 0
            assert d["images_per_s"] == batch / d["median_s"]
            assert d["peak_mb"] is None  # GPU memory only
        assert entry["workbench_over_torchvision"]["of_medians"] > 0
        # a workbench-only mode: no torchvision entry, no ratio
        assert set(pair[f"bf16_cl/batch{batch}"]) == {"workbench"}
    assert list(res["meets_targets"]) == ["mask_rcnn: workbench fp32 latency <= torchvision's"]


def test_targets():
    def entry(w, t=None):
        e = {"workbench": {"images_per_s": w}}
        if t is not None:
            e["workbench_over_torchvision"] = {"of_medians": t}
        return e

    res = {"pairs": {"mask_rcnn": {"fp32/batch1": entry(1.0, 0.9), "fp32/batch16": entry(10.0),
                                   "bf16/batch16": entry(16.0)},
                     "keypoint_rcnn": {"fp32/batch1": entry(1.0, 1.1), "fp32/batch16": entry(10.0),
                                       "bf16/batch16": entry(14.0)}},
           "inspect": {"wall": {"trace_over_plain": 1.07}}}
    assert cuda_bench.targets(res) == {
        "mask_rcnn: workbench fp32 latency <= torchvision's": True,
        "mask_rcnn: workbench bf16 throughput at batch 16 >= 1.5x its fp32": True,
        "keypoint_rcnn: workbench fp32 latency <= torchvision's": False,
        "keypoint_rcnn: workbench bf16 throughput at batch 16 >= 1.5x its fp32": False,
        "trace overhead <= 1.05x (wall)": False,
    }
