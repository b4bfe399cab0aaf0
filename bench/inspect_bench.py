"""Cost of the inspection layer: trace vs. plain inference, extraction vs. plain image rate.

Run ``python bench/inspect_bench.py`` (prints the figures, writes ``bench/results/inspect.json``)
or call :func:`run` (the ``python -m bench`` entry point does). Everything happens in one
process on the same images, and the three measurements are interleaved round by round so that
a busy machine slows them alike; the figures are medians over rounds.

* plain: ``model(batch)`` under ``torch.no_grad()`` on already decoded and resized images.
  Timed batch by batch against trace (alternating which runs first), and separately as a
  whole pass against each extraction run.
* trace: ``workbench.inspect.trace(model, batch)``, every stage kept (RPN candidates and
  matching, per-ROI features, NMS bookkeeping, mask logits).
* extract: ``workbench.extract.extract`` on the image folder from scratch: decoding, model,
  per-detection embeddings + pooled FPN maps, shard writing with checksums. It computes what it
  writes: the mask head and mask pasting (no mask feature is requested) are not run, which is
  why it can be faster than plain Mask R-CNN inference.

* recording off: ``model(batch)`` as above against the same forward with the stage-recording
  calls of the model code (``run_stage``, ``active_recorder``, ``put_record`` in every module
  that uses them) replaced by bare ones that never look for a recorder: what the recording
  mechanism costs a forward that records nothing (``forward_over_bare``).

Targets (the inspection layer's issue): trace <= 1.05x plain time, extraction >= 0.9x the
plain image rate, forward with recording off within noise of the bare one. Both wall-clock and process CPU time are reported: on a shared machine the
CPU time (what this process consumed, all threads) is the stabler measure of cost, while the
wall clock shows what overlapping decoding with the model buys.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fixtures import build_fixture_model, fixtures_dir  # noqa: E402


def _build(fixture: str, device: Optional[str] = None):
    if device is None:
        device = "cuda" if torch.cuda.is_available() and os.environ.get("BENCH_CUDA") else "cpu"
    return build_fixture_model(fixture, device)


def _bare_recording():
    """A context in which the model code's recording calls are bare (no recorder lookup)."""
    import contextlib
    import importlib
    import pkgutil

    import workbench.modeling as modeling
    from workbench.modeling import recording

    def bare_run_stage(name, compute, *, skipped=None, owner=None):
        return compute()

    bare = {"run_stage": bare_run_stage, "active_recorder": lambda owner=None: None,
            "put_record": lambda kind, value, owner=None: None}
    patched = []
    for info in pkgutil.walk_packages(modeling.__path__, modeling.__name__ + "."):
        mod = importlib.import_module(info.name)
        if mod is recording:
            continue
        for name, fn in bare.items():
            if getattr(mod, name, None) is getattr(recording, name):
                patched.append((mod, name))

    @contextlib.contextmanager
    def ctx():
        for mod, name in patched:
            setattr(mod, name, bare[name])
        try:
            yield
        finally:
            for mod, name in patched:
                setattr(mod, name, getattr(recording, name))
    return ctx, len(patched)


def _sync() -> None:
    """On a GPU, wait for the queued work: a call's time ends when its results are there."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _time(fn) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    _sync()
    w, c = time.perf_counter(), time.process_time()
    fn()
    _sync()
    return time.perf_counter() - w, time.process_time() - c


def run(*, fixture: str = "mask_rcnn_R_50_FPN", copies: int = 3, batch_size: int = 2,
        rounds: int = 9, threads: int = 1, out_json: Optional[str] = None,
        verbose: bool = True, device: Optional[str] = None) -> Dict[str, Any]:
    """Measure and return the figures (and write them as JSON when ``out_json`` is given).

    Args:
        fixture: the reference fixture whose model and weights to use.
        copies: the fixture's photos are used this many times each (more images per run).
        batch_size: images per forward, the same for all three measurements.
        rounds: interleaved rounds; medians are reported.
        threads: torch CPU threads (the machine is shared: 1 by default).
        device: where the model runs ("cuda" for the GPU bench); default "cpu", or "cuda" when
            ``$BENCH_CUDA`` is set and a GPU is there.
    """
    torch.set_num_threads(threads)
    from workbench import inspect as wi
    from workbench.data import transforms as T
    from workbench.extract import extract, list_images
    from workbench.extract.core import _load_image

    cfg, model = _build(fixture, device)
    tmp = Path(tempfile.mkdtemp(prefix="inspect_bench_"))
    try:
        images = tmp / "images"
        images.mkdir()
        photos = sorted((fixtures_dir() / "images").iterdir())
        for c in range(copies):
            for p in photos:
                shutil.copy(p, images / f"{c}_{p.name}")
        records = list_images(images)
        resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        inputs = [_load_image(r, resize, cfg.INPUT.FORMAT) for r in records]
        batches: List[List[Dict[str, Any]]] = [inputs[i:i + batch_size]
                                               for i in range(0, len(inputs), batch_size)]
        n = len(inputs)

        def plain_batch(b):
            with torch.no_grad():
                model(b)

        def extract_all(k=[0]):
            out = tmp / f"out{k[0]}"
            k[0] += 1
            extract(model, images, out, features=["detections", "fpn_pooled"], batch_size=batch_size,
                    shard_size=batch_size * 2, min_size=cfg.INPUT.MIN_SIZE_TEST,
                    max_size=cfg.INPUT.MAX_SIZE_TEST, input_format=cfg.INPUT.FORMAT,
                    num_workers=1, progress=False)
            shutil.rmtree(out)

        bare, n_patched = _bare_recording()

        def bare_batch(b):
            with bare(), torch.no_grad():
                model(b)

        for b in batches:  # warm-up (allocator, lazy inits)
            plain_batch(b)
            wi.trace(model, b)
            bare_batch(b)
        names = ("plain", "trace", "plain_for_extract", "extract", "forward", "bare")
        wall: Dict[str, List[float]] = {k: [] for k in names}
        cpu: Dict[str, List[float]] = {k: [] for k in names}
        pair_ratios: Dict[str, List[float]] = {"wall": [], "cpu": []}
        for r in range(rounds):
            # plain vs trace, batch by batch, alternating which goes first (drift cancels)
            acc = {"plain": [0.0, 0.0], "trace": [0.0, 0.0]}
            for j, b in enumerate(batches):
                pair = [("plain", lambda: plain_batch(b)), ("trace", lambda: wi.trace(model, b))]
                got = {}
                for tag, fn in (pair if (r + j) % 2 == 0 else pair[::-1]):
                    got[tag] = w, c = _time(fn)
                    acc[tag][0] += w
                    acc[tag][1] += c
                pair_ratios["wall"].append(got["trace"][0] / got["plain"][0])
                pair_ratios["cpu"].append(got["trace"][1] / got["plain"][1])
            for tag, (w, c) in acc.items():
                wall[tag].append(w)
                cpu[tag].append(c)
            # plain over all images vs a from-scratch extraction of the folder, alternating order
            pair = [("plain_for_extract", lambda: [plain_batch(b) for b in batches]),
                    ("extract", extract_all)]
            for tag, fn in (pair if r % 2 == 0 else pair[::-1]):
                w, c = _time(fn)
                wall[tag].append(w)
                cpu[tag].append(c)
            # recording off: the model's forward vs the same forward with bare recording calls
            acc = {"forward": [0.0, 0.0], "bare": [0.0, 0.0]}
            for j, b in enumerate(batches):
                pair = [("forward", lambda: plain_batch(b)), ("bare", lambda: bare_batch(b))]
                for tag, fn in (pair if (r + j) % 2 == 0 else pair[::-1]):
                    w, c = _time(fn)
                    acc[tag][0] += w
                    acc[tag][1] += c
            for tag, (w, c) in acc.items():
                wall[tag].append(w)
                cpu[tag].append(c)
            if verbose:
                print(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{k} {wall[k][-1]:.2f}s ({cpu[k][-1]:.2f}s cpu)" for k in names), flush=True)

        def figures(t: Dict[str, List[float]], clock: str) -> Dict[str, Any]:
            med = {k: statistics.median(v) for k, v in t.items()}
            return {
                "trace_over_plain_median_of_batch_pairs": statistics.median(pair_ratios[clock]),
                "seconds": t, "median_seconds": med,
                "plain_images_per_s": n / med["plain"], "trace_images_per_s": n / med["trace"],
                "extract_images_per_s": n / med["extract"],
                "trace_over_plain": med["trace"] / med["plain"],
                "trace_over_plain_median_of_rounds": statistics.median(
                    [a / b for a, b in zip(t["trace"], t["plain"])]),
                "extract_rate_over_plain": med["plain_for_extract"] / med["extract"],
                "extract_rate_over_plain_median_of_rounds": statistics.median(
                    [b / a for a, b in zip(t["extract"], t["plain_for_extract"])]),
                "forward_over_bare": med["forward"] / med["bare"],
                "forward_over_bare_median_of_rounds": statistics.median(
                    [a / b for a, b in zip(t["forward"], t["bare"])]),
            }

        result = {
            "fixture": fixture, "images": n, "batch_size": batch_size, "rounds": rounds,
            "threads": threads, "device": str(next(model.parameters()).device),
            "bare_recording_calls_patched": n_patched,
            "wall": figures(wall, "wall"), "cpu": figures(cpu, "cpu"),
            "targets": {"trace_over_plain <=": 1.05, "extract_rate_over_plain >=": 0.9},
        }
        result["meets_targets"] = {
            clock: (result[clock]["trace_over_plain"] <= 1.05
                    and result[clock]["extract_rate_over_plain"] >= 0.9)
            for clock in ("wall", "cpu")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        for clock in ("wall", "cpu"):
            f = result[clock]
            print(f"[{clock}] plain {f['plain_images_per_s']:.2f} img/s | trace "
                  f"{f['trace_images_per_s']:.2f} img/s, time x{f['trace_over_plain']:.3f} "
                  f"(batch pairs x{f['trace_over_plain_median_of_batch_pairs']:.3f}, target <= 1.05)"
                  f" | extract {f['extract_images_per_s']:.2f} img/s, rate "
                  f"x{f['extract_rate_over_plain']:.3f} (target >= 0.9)"
                  f" | recording off: forward x{f['forward_over_bare']:.3f} of the bare forward")
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", default="mask_rcnn_R_50_FPN")
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "inspect.json"))
    a = ap.parse_args()
    run(fixture=a.fixture, copies=a.copies, batch_size=a.batch_size, rounds=a.rounds,
        threads=a.threads, out_json=a.out)
