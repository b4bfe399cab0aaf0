"""workbench vs torchvision on a CUDA GPU: latency, throughput and memory per precision switch.

Run ``python bench/cuda_bench.py`` (or ``python -m bench.cuda_bench``) on a machine with CUDA; it
prints a table and writes ``cuda_bench.json`` to ``$OUT`` if set, else ``bench/results/``. Without
CUDA it says so and exits 0 having measured nothing. ``bench/gpu_check.sh`` runs it after the
tests and the parity suite.

The pairs are those of the CPU bench (``bench/models.py``): R50-FPN Mask R-CNN and Keypoint R-CNN
of both libraries, initialised with ``torch.manual_seed(0)``, score threshold 0 so that each
keeps exactly ``--detections`` (100) boxes per image, on 800 x 1333 photo-like images already on
the GPU, under ``torch.inference_mode()``. Measured per pair, mode and batch size (1, 8, 16):

* latency (batch 1) and throughput (images / s at batch 8 and 16): medians over rounds that
  alternate the two libraries (A B, then B A), each call timed from a synchronised device to a
  synchronised device (what a caller waits for);
* peak GPU memory of one call: ``torch.cuda.max_memory_allocated`` over the call, absolute and
  above what was allocated before it (the model's weights and the inputs).

Modes are ``workbench.utils.perf`` switches, applied to both libraries the same way (torchvision's
calls run inside ``perf.inference_precision``): "fp32" (full float32: TF32 off, the default),
"tf32" (``tf32=True``) and "bf16" (``autocast="bf16"``; workbench keeps its post-processing in
float32). Two workbench-only modes add the layout switches: "bf16_cl" (+ ``channels_last``) and
"bf16_cl_fold" (+ ``fold_batchnorm``).

Plus the inspection layer on the GPU (``bench/inspect_bench.py``'s ``run`` with ``device="cuda"``):
the stage-trace overhead over plain inference and the extraction image rate.

Targets (issue 21): workbench's fp32 latency <= torchvision's; workbench's bf16 throughput at batch
16 >= 1.5x its own fp32; trace overhead <= 1.05x. ``meets_targets`` in the JSON says which hold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import models as M  # noqa: E402

# mode -> workbench.utils.perf switches (every mode names the three GPU switches explicitly)
MODES: Dict[str, Dict[str, Any]] = {
    "fp32": {"tf32": False, "autocast": "off", "channels_last": False},
    "tf32": {"tf32": True, "autocast": "off", "channels_last": False},
    "bf16": {"tf32": False, "autocast": "bf16", "channels_last": False},
    "bf16_cl": {"tf32": False, "autocast": "bf16", "channels_last": True},
    "bf16_cl_fold": {"tf32": False, "autocast": "bf16", "channels_last": True, "fold_batchnorm": True},
}
SHARED_MODES = ("fp32", "tf32", "bf16")  # run by both libraries; the others by workbench only
BATCHES = (1, 8, 16)
NO_CUDA = "cuda_bench: no CUDA device here (torch.cuda.is_available() is False); nothing measured."


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds from a synchronised device to a synchronised device around ``fn()``."""
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _call(lib: str, model: torch.nn.Module, images: List[torch.Tensor], mode: str,
          device: torch.device) -> Callable[[], Any]:
    """One batched inference of ``lib``'s model on ``images`` ((3, H, W) RGB 0-255 on ``device``)
    under ``mode``'s switches."""
    from workbench.utils import perf

    switches = MODES[mode]
    if lib == "workbench":
        fmt = getattr(model, "bench_input_format", "BGR")
        inputs = [{"image": (im if fmt == "RGB" else im.flip(0)).contiguous(),
                   "height": im.shape[1], "width": im.shape[2]} for im in images]

        def run():
            with torch.inference_mode(), perf.inference_options(**switches):
                return model(inputs)
        return run
    scaled = [(im / 255.0).contiguous() for im in images]

    def run_tv():
        with torch.inference_mode(), perf.inference_options(**switches), perf.inference_precision(device):
            return model(scaled)
    return run_tv


def _count(lib: str, out: Any) -> List[int]:
    if lib == "workbench":
        return [len(o["instances"]) for o in out]
    return [int(o["boxes"].shape[0]) for o in out]


def _peak_memory(fn: Callable[[], Any], device: torch.device) -> Dict[str, Optional[float]]:
    if device.type != "cuda":
        return {"peak_mb": None, "peak_over_before_mb": None}
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_mb": peak / 2**20, "peak_over_before_mb": (peak - before) / 2**20}


def compare_pair(pair: str, *, device: torch.device, height: int, width: int,
                 batches: Sequence[int], modes: Sequence[str], detections: int,
                 latency_rounds: int, throughput_rounds: int, warmup: int,
                 verbose: bool) -> Dict[str, Any]:
    """Every mode and batch size of one pair; see the module docstring."""
    config, builder = M.PAIRS[pair]
    models = {
        "workbench": M.build_workbench(config, detections=detections).to(device),
        "torchvision": M.build_torchvision(builder, height=height, width=width,
                                           detections=detections).to(device),
    }
    images = [M.make_image(height, width, seed=i).to(device) for i in range(max(batches))]
    res: Dict[str, Any] = {"parameters": {lib: sum(p.numel() for p in m.parameters())
                                          for lib, m in models.items()}}
    for mode in modes:
        libs = [lib for lib in models if lib == "workbench" or mode in SHARED_MODES]
        for batch in batches:
            calls = {lib: _call(lib, models[lib], images[:batch], mode, device) for lib in libs}
            entry: Dict[str, Any] = {}
            for lib, fn in list(calls.items()):
                try:
                    for _ in range(max(warmup, 1)):
                        out = fn()
                    entry[lib] = {"detections": _count(lib, out), **_peak_memory(fn, device),
                                  "seconds": []}
                    del out
                except Exception as e:  # e.g. a library that cannot run this mode: say so, go on
                    entry[lib] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                    del calls[lib]
                    if verbose:
                        print(f"  {pair} {mode} batch {batch}: {lib} failed: {entry[lib]['error'][:300]}")
            libs = [lib for lib in libs if lib in calls]
            rounds = latency_rounds if batch == 1 else throughput_rounds
            for r in range(rounds):
                for lib in (libs if r % 2 == 0 else libs[::-1]):  # A B, then B A
                    entry[lib]["seconds"].append(_timed(calls[lib], device))
            for lib in libs:
                d = entry[lib]
                d["median_s"] = statistics.median(d["seconds"])
                d["images_per_s"] = batch / d["median_s"]
                d["detections_ok"] = all(n == detections for n in d["detections"])
            if len(libs) == 2:
                w, t = entry["workbench"], entry["torchvision"]
                entry["workbench_over_torchvision"] = {
                    "of_medians": w["median_s"] / t["median_s"],
                    "median_of_rounds": statistics.median(
                        [a / b for a, b in zip(w["seconds"], t["seconds"])])}
            res[f"{mode}/batch{batch}"] = entry
            if verbose:
                print(f"  {pair} {mode} batch {batch}: " + ", ".join(
                    f"{lib} {entry[lib]['median_s'] * 1e3:.1f} ms ({entry[lib]['images_per_s']:.1f} img/s"
                    + (f", peak {entry[lib]['peak_mb']:.0f} MB" if entry[lib]["peak_mb"] else "") + ")"
                    for lib in libs), flush=True)
    del models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def targets(result: Dict[str, Any]) -> Dict[str, Any]:
    """Which of the issue's targets the figures meet (None where not measured)."""
    met: Dict[str, Any] = {}
    for pair, res in result.get("pairs", {}).items():
        fp32_b1 = res.get("fp32/batch1", {})
        if "workbench_over_torchvision" in fp32_b1:
            met[f"{pair}: workbench fp32 latency <= torchvision's"] = (
                fp32_b1["workbench_over_torchvision"]["of_medians"] <= 1.0)
        fp32, bf16 = res.get("fp32/batch16", {}), res.get("bf16/batch16", {})
        if "workbench" in fp32 and "workbench" in bf16:
            met[f"{pair}: workbench bf16 throughput at batch 16 >= 1.5x its fp32"] = (
                bf16["workbench"]["images_per_s"] >= 1.5 * fp32["workbench"]["images_per_s"])
    ins = result.get("inspect")
    if ins:
        met["trace overhead <= 1.05x (wall)"] = ins["wall"]["trace_over_plain"] <= 1.05
    return met


def run(*, device: str = "cuda", height: int = 800, width: int = 1333,
        batches: Sequence[int] = BATCHES, modes: Sequence[str] = tuple(MODES),
        pairs: Sequence[str] = tuple(M.PAIRS), detections: int = 100, latency_rounds: int = 10,
        throughput_rounds: int = 3, warmup: int = 2, inspect: bool = True,
        inspect_kwargs: Optional[Dict[str, Any]] = None, out_json: Optional[str] = None,
        verbose: bool = True) -> Dict[str, Any]:
    """Measure; return the figures (and write them when ``out_json`` is given).

    ``device="cpu"`` runs the same code without GPU figures (the harness's own test does).
    """
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"Unknown modes {sorted(unknown)}; expected a subset of {list(MODES)}")
    dev = torch.device(device)
    import torchvision

    result: Dict[str, Any] = {
        "settings": {"device": str(dev), "height": height, "width": width, "batches": list(batches),
                     "modes": {m: MODES[m] for m in modes}, "pairs": list(pairs),
                     "detections": detections, "latency_rounds": latency_rounds,
                     "throughput_rounds": throughput_rounds, "warmup": warmup},
        "environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "python": platform.python_version(), "cuda": torch.version.cuda,
                        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None},
    }
    t0 = time.perf_counter()
    result["pairs"] = {}
    for pair in pairs:
        if verbose:
            print(f"{pair} at {height}x{width} on {dev} ...", flush=True)
        result["pairs"][pair] = compare_pair(
            pair, device=dev, height=height, width=width, batches=batches, modes=modes,
            detections=detections, latency_rounds=latency_rounds,
            throughput_rounds=throughput_rounds, warmup=warmup, verbose=verbose)
    if inspect:
        from bench import inspect_bench

        if verbose:
            print("inspection layer on the device (bench/inspect_bench.py) ...", flush=True)
        kwargs = {"copies": 3, "batch_size": 2, "rounds": 5, "threads": 4, **(inspect_kwargs or {})}
        try:
            result["inspect"] = inspect_bench.run(device=str(dev), verbose=verbose, **kwargs)
        except Exception as e:  # e.g. no reference fixtures on this machine: keep the pairs' figures
            result["inspect_error"] = f"{type(e).__name__}: {e}"[:2000]
            if verbose:
                print(f"inspection bench failed: {result['inspect_error']}", flush=True)
    result["meets_targets"] = targets(result)
    result["total_seconds"] = time.perf_counter() - t0
    if verbose:
        for name, ok in result["meets_targets"].items():
            print(f"{'MET ' if ok else 'MISS'}  {name}")
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=1) + "\n")
        if verbose:
            print(f"wrote {out_json}")
    return result


def default_out() -> str:
    out = os.environ.get("OUT")
    return str(Path(out) / "cuda_bench.json") if out else str(REPO / "bench" / "results" / "cuda_bench.json")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1333)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--pairs", default=",".join(M.PAIRS))
    ap.add_argument("--detections", type=int, default=100)
    ap.add_argument("--latency-rounds", type=int, default=10)
    ap.add_argument("--throughput-rounds", type=int, default=3)
    ap.add_argument("--skip-inspect", action="store_true")
    ap.add_argument("--out", default=default_out())
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    run(height=a.height, width=a.width, batches=[int(b) for b in a.batches.split(",") if b],
        modes=[m for m in a.modes.split(",") if m], pairs=[p for p in a.pairs.split(",") if p],
        detections=a.detections, latency_rounds=a.latency_rounds,
        throughput_rounds=a.throughput_rounds, inspect=not a.skip_inspect, out_json=a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
