"""workbench vs torchvision on full-size R50-FPN Mask / Keypoint R-CNN, plus the embedded model.

Run ``python -m bench`` (or ``python bench/run.py``) from the repository root: it prints a table
and writes ``bench/results/bench.json``. ``--quick`` runs everything on small inputs with one
repeat (a dry run: a minute or two instead of many).

What is measured, per pair (workbench model vs the torchvision model of the same architecture,
both randomly initialised with ``torch.manual_seed(0)`` and a score threshold of 0 so that each
returns exactly ``--detections`` boxes; the counts are checked and reported):

* backbone time: ResNet-50 + FPN on the normalised, padded batch tensor.
* full inference time: one image in, post-processed detections out (masks pasted / keypoints
  decoded), under ``torch.no_grad()``.
  Both are timed A B A B in one process after ``--warmup`` untimed calls of each model (the
  first of which also counts the FLOPs); medians
  over ``--repeats`` rounds are reported, with the ratio workbench / torchvision of the medians
  and the median of the per-round ratios (the stabler one on a shared machine).
* peak memory: the resident-set high-water mark (Linux ``VmHWM`` from /proc/self/status, else
  ``getrusage(RUSAGE_SELF).ru_maxrss``, which on Linux would carry the parent's peak over fork +
  exec) of a fresh subprocess that imports both libraries, builds the input, builds the model
  and runs one inference. Reported as the peak itself and as the growth over the same process's mark
  just before building the model (weights + activations + workspace; no tracemalloc, which
  would not see torch's allocations).
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one full inference and one backbone
  call (it counts matmuls and convolutions; 1 multiply-add = 2 FLOPs). Divided by the median
  time this is the achieved GFLOP/s, and divided again by the measured GEMM peak (a square fp32
  product of ``--gemm-size`` at the same thread count, the faster of ``torch.mm`` and the same
  product as a oneDNN 1x1 convolution) it says how far each model is from what the machine's
  matmul can do.
* ``--unoptimised``: workbench also runs with every inference optimisation of
  ``workbench.utils.perf`` off (``WORKBENCH_INFERENCE_OPT=0``), as a third subject in the same
  A B C rounds and its own peak-memory subprocess: the before/after comparison in one process.

Plus, for the embedded model (``Shapes/panoptic_kp_R_50_FPN_small.yaml`` with its packaged weights,
through ``DefaultPredictor``): its median latency on an ``--embedded-size`` square shapes image; and the
inspection layer's cost, from ``bench/inspect_bench.py``'s ``run`` (stage-trace overhead over
plain inference, extraction image rate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import models as M  # noqa: E402

PARTS = ("compare", "memory", "flops", "gemm", "embedded", "inspect")
FULL = dict(height=800, width=1333, repeats=5, warmup=1, gemm_size=2048, embedded_size=384,
            inspect_kwargs={})
QUICK = dict(height=256, width=416, repeats=1, warmup=1, gemm_size=512, embedded_size=192,
             inspect_kwargs={"copies": 1, "rounds": 1, "batch_size": 2})


def _seconds(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _ratio(a: float, b: float) -> Optional[float]:
    return a / b if b else None


def gemm_peak(size: int, *, repeats: int = 5) -> Dict[str, Any]:
    """Best and median GFLOP/s of a (size x size) @ (size x size) fp32 product on this thread count.

    Measured twice: ``torch.mm`` (MKL's sgemm) and the same product as a 1x1 convolution in
    oneDNN's blocked layout (a (1, size, size/64, 64) input, size filters), the library the
    models' convolutions run on. On some CPUs (AMD's, where MKL takes a generic code path) the
    second is well above the first; ``peak_gflops`` is the larger of the two bests, and the
    "% of GEMM peak" figures are fractions of it.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    torch.mm(a, b)  # warm-up
    times = [_seconds(lambda: torch.mm(a, b)) for _ in range(max(repeats, 3))]
    flops = 2.0 * size ** 3
    res: Dict[str, Any] = {"size": size, "seconds": times, "gflops_best": flops / min(times) / 1e9,
                           "gflops_median": flops / statistics.median(times) / 1e9}
    if getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available() and size % 64 == 0:
        # (1, K, M / 64, 64) pixels x (N, K, 1, 1) filters: M = N = K = size
        x = a.t().contiguous().view(1, size, size // 64, 64).to_mkldnn()
        w = b.t().contiguous().view(size, size, 1, 1)
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w)  # warm-up
            conv_times = [_seconds(lambda: torch.nn.functional.conv2d(x, w))
                          for _ in range(max(repeats, 3))]
        res["onednn_conv1x1_seconds"] = conv_times
        res["gflops_best_onednn_conv1x1"] = flops / min(conv_times) / 1e9
    res["peak_gflops"] = max(res["gflops_best"], res.get("gflops_best_onednn_conv1x1", 0.0))
    return res


def count_flops(fn: Callable[[], Any], keep: Optional[List[Any]] = None) -> int:
    """FLOPs of one call of ``fn`` as counted by torch's FlopCounterMode.

    ``keep``, if given, is cleared and receives ``fn``'s return value.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    if keep is not None:
        keep[:] = [out]
    return int(counter.get_total_flops())


def peak_memory(key: str, *, height: int, width: int, threads: int, detections: int) -> Dict[str, Any]:
    """Runs :func:`_peak_memory_child` in a fresh interpreter and returns its report."""
    cmd = [sys.executable, "-m", "bench.run", "--peak-memory-child", key, "--height", str(height),
           "--width", str(width), "--threads", str(threads), "--detections", str(detections)]
    # A "workbench-unopt" subject turns every optimisation off around each call itself.
    proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory subprocess for {key!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_high_water_kib() -> int:
    """This process's resident-set high-water mark in KiB.

    Linux's ``VmHWM`` (/proc/self/status) belongs to the address space, which ``exec`` replaces,
    so a fresh child starts from its own mark. ``ru_maxrss`` is the fallback elsewhere; on Linux
    it is useless here because it survives fork + exec: a child would inherit the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # macOS reports bytes


def _peak_memory_child(key: str, *, height: int, width: int, threads: int, detections: int) -> None:
    torch.set_num_threads(threads)
    import torchvision  # noqa: F401  (both libraries imported in every child: same baseline)
    import workbench.modeling  # noqa: F401

    M.make_image(height, width)
    before = _rss_high_water_kib()
    subject = M.build_subject(key, height=height, width=width, detections=detections)
    built = _rss_high_water_kib()
    subject.full()
    peak = _rss_high_water_kib()
    print(json.dumps({"peak_rss_mb": peak / 1024, "before_build_rss_mb": before / 1024,
                      "after_build_rss_mb": built / 1024, "peak_over_before_build_mb": (peak - before) / 1024}))


def compare_pair(pair: str, *, height: int, width: int, repeats: int, warmup: int,
                 detections: int, flops: bool, verbose: bool,
                 unoptimised: bool = False) -> Dict[str, Any]:
    """Times workbench against torchvision on one architecture, A B A B after warm-up.

    With ``unoptimised``, a third subject, workbench with every inference optimisation off
    ("workbench-unopt"), joins the rounds (A B C A B C): before/after in one process.
    """
    out_box: List[Any] = []
    libs = ("workbench", "torchvision") + (("workbench-unopt",) if unoptimised else ())
    subjects = [M.build_subject(f"{lib}:{pair}", height=height, width=width, detections=detections)
                for lib in libs]
    res: Dict[str, Any] = {}
    for s in subjects:
        res[s.name] = d = {"backbone_s": [], "full_s": []}
        for w in range(max(warmup, 1)):
            if w == 0 and flops:  # the first warm-up call is also the one whose FLOPs are counted
                d["full_gflop"] = count_flops(s.full, keep=out_box) / 1e9
                d["backbone_gflop"] = count_flops(s.backbone) / 1e9
                out = out_box[0]
            else:
                out = s.full()
                s.backbone()
        d["detections"] = s.count(out)
    for r in range(repeats):
        for kind in ("backbone", "full"):
            for s in subjects:  # A B, then A B again next round
                res[s.name][f"{kind}_s"].append(_seconds(getattr(s, kind)))
        if verbose:
            print(f"  {pair} round {r + 1}/{repeats}: " + ", ".join(
                f"{s.name} backbone {res[s.name]['backbone_s'][-1]:.3f}s full {res[s.name]['full_s'][-1]:.3f}s"
                for s in subjects), flush=True)
    for s in subjects:
        d = res[s.name]
        d["backbone_median_s"] = statistics.median(d["backbone_s"])
        d["full_median_s"] = statistics.median(d["full_s"])
        d["parameters"] = sum(p.numel() for p in s.model.parameters())
    def ratios(a, b):
        return {kind: {"of_medians": _ratio(a[f"{kind}_median_s"], b[f"{kind}_median_s"]),
                       "median_of_rounds": statistics.median(
                           [x / y for x, y in zip(a[f"{kind}_s"], b[f"{kind}_s"])])}
                for kind in ("backbone", "full")}

    a, b = res[f"workbench:{pair}"], res[f"torchvision:{pair}"]
    res["ratio_workbench_over_torchvision"] = ratios(a, b)
    res["detections_ok"] = a["detections"] == b["detections"] == detections
    if unoptimised:
        c = res[f"workbench-unopt:{pair}"]
        res["ratio_workbench-unopt_over_torchvision"] = ratios(c, b)
        res["ratio_workbench_over_workbench-unopt"] = ratios(a, c)
        res["detections_ok"] = res["detections_ok"] and c["detections"] == detections
    return res


def embedded_latency(*, size: int, repeats: int, warmup: int, flops: bool) -> Dict[str, Any]:
    """Median latency of the embedded model, as shipped, on one ``size`` x ``size`` image.

    The packaged weights (``model_zoo.get(..., trained=True)``) with their own test thresholds,
    called through ``DefaultPredictor`` (BGR uint8 in, resized, detections out: what a user
    runs) on a held-out-style shapes image (seed not in any training split). The trained model
    keeps what passes its own score threshold (no fixed detection count, unlike the pairs).
    """
    from workbench import model_zoo
    from workbench.data.datasets.shapes import generate_shapes_image
    from workbench.engine import DefaultPredictor

    cfg = model_zoo.get_config(M.EMBEDDED_CONFIG, trained=True)
    cfg.MODEL.DEVICE = "cpu"
    predictor = DefaultPredictor(cfg)
    rgb, record = generate_shapes_image([2026, 12, 2], height=size, width=size)
    bgr = rgb[:, :, ::-1].copy()

    def full():
        return predictor(bgr)

    box: List[Any] = []
    gflop = count_flops(full, keep=box) / 1e9 if flops else None  # doubles as the first warm-up
    out = box[0] if box else full()
    for _ in range(warmup - 1):
        full()
    times = [_seconds(full) for _ in range(max(repeats, 3))]
    res = {"config": M.EMBEDDED_CONFIG, "weights": "packaged (" + os.path.basename(cfg.MODEL.WEIGHTS) + ")",
           "image": [size, size],
           "latency_s": times, "latency_median_s": statistics.median(times),
           "detections": len(out["instances"]), "objects_drawn": len(record["annotations"]),
           "parameters": sum(p.numel() for p in predictor.model.parameters())}
    if gflop is not None:
        res["full_gflop"] = gflop
    return res


def run(*, height: int = 800, width: int = 1333, threads: int = 2, repeats: int = 5,
        warmup: int = 1, detections: int = 100, pairs: Sequence[str] = tuple(M.PAIRS),
        parts: Sequence[str] = PARTS, gemm_size: int = 2048, embedded_size: int = 384,
        inspect_kwargs: Optional[Dict[str, Any]] = None, out_json: Optional[str] = None,
        verbose: bool = True, unoptimised: bool = False) -> Dict[str, Any]:
    """Measures everything in ``parts`` and returns (and optionally writes) the figures.

    Args:
        height, width: input size fed to both libraries (no resizing happens inside either).
        threads: ``torch.set_num_threads`` for every measurement, subprocesses included.
        repeats: timed A B rounds per pair (and embedded-model calls, at least 3).
        warmup: untimed full + backbone calls of each model before timing.
        detections: boxes per image each model must return (score threshold 0).
        pairs: which of :data:`bench.models.PAIRS` to compare.
        parts: subset of :data:`PARTS`; ``flops`` and ``memory`` attach to the compared pairs.
        gemm_size: side of the square fp32 matmul that measures the GEMM peak.
        embedded_size: side of the square image for the embedded model's latency.
        inspect_kwargs: extra keyword arguments for ``bench.inspect_bench.run``.
        unoptimised: also time (and measure the memory of) workbench with every inference
            optimisation off, in the same rounds: the before/after comparison.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"Unknown parts {sorted(unknown)}; expected a subset of {PARTS}")
    torch.set_num_threads(threads)
    from workbench.utils import perf

    result: Dict[str, Any] = {
        "settings": {"height": height, "width": width, "threads": threads, "repeats": repeats,
                     "warmup": warmup, "detections": detections, "pairs": list(pairs),
                     "parts": list(parts), "gemm_size": gemm_size, "embedded_size": embedded_size,
                     "inference_options": dataclasses.asdict(perf.get_inference_options()),
                     "unoptimised": unoptimised},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "cpu_count": os.cpu_count(),
                        "load_average_at_start": list(os.getloadavg())},
    }
    import torchvision
    result["environment"]["torchvision"] = torchvision.__version__
    t0 = time.perf_counter()
    if "gemm" in parts:
        result["gemm"] = gemm_peak(gemm_size)
        if verbose:
            gm = result["gemm"]
            print(f"GEMM {gemm_size}^2 fp32: {gm['gflops_best']:.1f} GFLOP/s best (torch.mm)"
                  + (f", {gm['gflops_best_onednn_conv1x1']:.1f} (oneDNN 1x1 conv)"
                     if "gflops_best_onednn_conv1x1" in gm else ""), flush=True)
    if "compare" in parts:
        result["pairs"] = {}
        for pair in pairs:
            if verbose:
                print(f"comparing {pair} at {height}x{width} ...", flush=True)
            res = compare_pair(pair, height=height, width=width, repeats=repeats, warmup=warmup,
                               detections=detections, flops="flops" in parts, verbose=verbose,
                               unoptimised=unoptimised)
            result["pairs"][pair] = res
    if "memory" in parts:
        mem = result.setdefault("memory", {})
        libs = ("workbench", "torchvision") + (("workbench-unopt",) if unoptimised else ())
        for pair in pairs:
            for lib in libs:
                key = f"{lib}:{pair}"
                if verbose:
                    print(f"peak memory of {key} (fresh subprocess) ...", flush=True)
                mem[key] = peak_memory(key, height=height, width=width, threads=threads,
                                       detections=detections)
    if "embedded" in parts:
        if verbose:
            print(f"embedded model at {embedded_size}x{embedded_size} ...", flush=True)
        result["embedded"] = embedded_latency(size=embedded_size, repeats=repeats, warmup=warmup,
                                              flops="flops" in parts)
    if "inspect" in parts:
        from bench import inspect_bench

        if verbose:
            print("inspection layer (bench/inspect_bench.py) ...", flush=True)
        result["inspect"] = inspect_bench.run(threads=threads, verbose=verbose, **(inspect_kwargs or {}))
    if "gemm" in parts:
        peak = result["gemm"]["peak_gflops"]
        for pair, res in result.get("pairs", {}).items():
            for lib in M.LIBRARIES:
                if f"{lib}:{pair}" not in res:
                    continue
                d = res[f"{lib}:{pair}"]
                for kind in ("full", "backbone"):
                    if f"{kind}_gflop" in d:
                        d[f"{kind}_gflops_achieved"] = d[f"{kind}_gflop"] / d[f"{kind}_median_s"]
                        d[f"{kind}_fraction_of_gemm_peak"] = d[f"{kind}_gflops_achieved"] / peak
        emb = result.get("embedded", {})
        if "full_gflop" in emb:
            emb["gflops_achieved"] = emb["full_gflop"] / emb["latency_median_s"]
            emb["fraction_of_gemm_peak"] = emb["gflops_achieved"] / peak
    result["environment"]["load_average_at_end"] = list(os.getloadavg())
    result["total_seconds"] = time.perf_counter() - t0
    if verbose:
        print(format_table(result))
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=1) + "\n")
        if verbose:
            print(f"wrote {out_json}")
    return result


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_table(result: Dict[str, Any]) -> str:
    """The human-readable summary of :func:`run`'s result."""
    s = result["settings"]
    lines = [f"input {s['height']}x{s['width']}, {s['threads']} threads, {s['repeats']} rounds "
             f"(medians), load average {result['environment']['load_average_at_start'][0]:.2f} at start"]
    opts = s.get("inference_options")
    if opts is not None:
        on = [k for k, v in opts.items() if v and v != "off"]  # autocast is "off" | "bf16" | "fp16"
        lines.append("workbench inference optimisations: " + (", ".join(on) if on else "all off")
                     + (" (WORKBENCH_INFERENCE_OPT=0 turns them off)" if on else ""))
    gm = result.get("gemm", {})
    peak = gm.get("peak_gflops", gm.get("gflops_best"))
    if peak:
        lines.append(f"GEMM peak ({s['gemm_size']}^2 fp32): {peak:.1f} GFLOP/s = best of torch.mm "
                     f"{gm['gflops_best']:.1f} and oneDNN 1x1 conv "
                     f"{_fmt(gm.get('gflops_best_onednn_conv1x1'), '.1f')}")
    head = f"{'':34s}{'workbench':>12s}{'torchvision':>13s}{'wb/tv':>8s}{'per-round':>11s}"
    for pair in s["pairs"]:
        res = result.get("pairs", {}).get(pair)
        mem = result.get("memory", {})
        if res is None and not mem:
            continue
        lines += ["", f"{pair} R50-FPN", head]
        a = res and res[f"workbench:{pair}"]
        b = res and res[f"torchvision:{pair}"]
        if res:
            rr = res["ratio_workbench_over_torchvision"]
            lines.append(f"{'detections':34s}{a['detections']:>12d}{b['detections']:>13d}")
            for kind, label in (("backbone", "backbone time (s)"), ("full", "full inference (s)")):
                lines.append(f"{label:34s}{a[kind + '_median_s']:>12.3f}{b[kind + '_median_s']:>13.3f}"
                             f"{_fmt(rr[kind]['of_medians'], '>8.3f')}{rr[kind]['median_of_rounds']:>11.3f}")
            for kind in ("full", "backbone"):
                if f"{kind}_gflop" in a:
                    lines.append(f"{kind + ' GFLOP':34s}{a[kind + '_gflop']:>12.1f}{b[kind + '_gflop']:>13.1f}"
                                 f"{_fmt(_ratio(a[kind + '_gflop'], b[kind + '_gflop']), '>8.3f')}")
                if f"{kind}_fraction_of_gemm_peak" in a:
                    lines.append(f"{kind + ' GFLOP/s (% of GEMM peak)':34s}"
                                 f"{a[kind + '_gflops_achieved']:>6.1f} ({100 * a[kind + '_fraction_of_gemm_peak']:>3.0f}%)"
                                 f"{b[kind + '_gflops_achieved']:>7.1f} ({100 * b[kind + '_fraction_of_gemm_peak']:>3.0f}%)")
        ma, mb = mem.get(f"workbench:{pair}"), mem.get(f"torchvision:{pair}")
        if ma and mb:
            for k, label in (("peak_rss_mb", "peak RSS (MB)"), ("peak_over_before_build_mb", "  growth over pre-build (MB)")):
                lines.append(f"{label:34s}{ma[k]:>12.0f}{mb[k]:>13.0f}{_fmt(_ratio(ma[k], mb[k]), '>8.3f')}")
        c = res and res.get(f"workbench-unopt:{pair}")
        mc = mem.get(f"workbench-unopt:{pair}")
        if c or mc:
            lines.append(f"  workbench with every optimisation off (WORKBENCH_INFERENCE_OPT=0), same rounds:")
            lines.append(f"{'':34s}{'unopt':>12s}{'unopt/tv':>13s}{'wb/unopt':>9s}{'per-round':>10s}")
        if c:
            for kind, label in (("backbone", "  backbone time (s)"), ("full", "  full inference (s)")):
                r_tv = res["ratio_workbench-unopt_over_torchvision"][kind]
                r_wb = res["ratio_workbench_over_workbench-unopt"][kind]
                lines.append(f"{label:34s}{c[kind + '_median_s']:>12.3f}{_fmt(r_tv['of_medians'], '>13.3f')}"
                             f"{_fmt(r_wb['of_medians'], '>9.3f')}{r_wb['median_of_rounds']:>10.3f}")
            if "backbone_fraction_of_gemm_peak" in c:
                lines.append(f"{'  backbone GFLOP/s (% of GEMM peak)':34s}{c['backbone_gflops_achieved']:>6.1f} "
                             f"({100 * c['backbone_fraction_of_gemm_peak']:>3.0f}%)")
        if mc:
            lines.append(f"{'  peak RSS (MB)':34s}{mc['peak_rss_mb']:>12.0f}"
                         f"{_fmt(_ratio(mc['peak_rss_mb'], mb['peak_rss_mb']) if mb else None, '>13.3f')}"
                         f"{_fmt(_ratio(ma['peak_rss_mb'], mc['peak_rss_mb']) if ma else None, '>9.3f')}")
    emb = result.get("embedded")
    if emb:
        extra = (f", {emb['full_gflop']:.2f} GFLOP" if "full_gflop" in emb else "")
        extra += (f", {100 * emb['fraction_of_gemm_peak']:.0f}% of GEMM peak" if "fraction_of_gemm_peak" in emb else "")
        lines += ["", f"embedded model ({emb['config']}, {emb['weights']}) on {emb['image'][0]}x{emb['image'][1]}: "
                  f"{1000 * emb['latency_median_s']:.1f} ms median, {emb['detections']} detections{extra}"]
    ins = result.get("inspect")
    if ins:
        lines += ["", f"inspection layer ({ins['fixture']}, {ins['images']} images, {ins['rounds']} rounds, "
                  f"{ins['threads']} threads):"]
        for clock in ("wall", "cpu"):
            f = ins[clock]
            lines.append(f"  [{clock:4s}] trace overhead x{f['trace_over_plain']:.3f} (target <= 1.05); "
                         f"extraction {f['extract_images_per_s']:.2f} img/s = x{f['extract_rate_over_plain']:.3f} "
                         f"plain rate (target >= 0.9)")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"small dry run: {QUICK['height']}x{QUICK['width']}, 1 repeat, small GEMM, "
                         "1 inspection round on 1 copy of the fixture images")
    ap.add_argument("--height", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--detections", type=int, default=100)
    ap.add_argument("--pairs", default=",".join(M.PAIRS), help="comma-separated subset of " + ",".join(M.PAIRS))
    ap.add_argument("--skip", default="", help="comma-separated parts to skip, from " + ",".join(PARTS))
    ap.add_argument("--gemm-size", type=int)
    ap.add_argument("--embedded-size", type=int)
    ap.add_argument("--inspect-rounds", type=int)
    ap.add_argument("--inspect-copies", type=int)
    ap.add_argument("--unoptimised", action="store_true",
                    help="also run workbench with every inference optimisation off "
                         "(workbench.utils.perf; WORKBENCH_INFERENCE_OPT=0) in the same rounds: "
                         "before/after in one process")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bench.json"))
    ap.add_argument("--peak-memory-child", metavar="KEY", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    preset = dict(QUICK if a.quick else FULL)
    for k in ("height", "width", "repeats", "warmup", "gemm_size", "embedded_size"):
        if getattr(a, k) is not None:
            preset[k] = getattr(a, k)
    if a.peak_memory_child:
        _peak_memory_child(a.peak_memory_child, height=preset["height"], width=preset["width"],
                           threads=a.threads, detections=a.detections)
        return {}
    inspect_kwargs = dict(preset.pop("inspect_kwargs"))
    if a.inspect_rounds is not None:
        inspect_kwargs["rounds"] = a.inspect_rounds
    if a.inspect_copies is not None:
        inspect_kwargs["copies"] = a.inspect_copies
    skip = {p for p in a.skip.split(",") if p}
    if skip - set(PARTS):
        ap.error(f"--skip: unknown parts {sorted(skip - set(PARTS))}; choose from {','.join(PARTS)}")
    pairs = [p for p in a.pairs.split(",") if p]
    if set(pairs) - set(M.PAIRS):
        ap.error(f"--pairs: unknown {sorted(set(pairs) - set(M.PAIRS))}; choose from {','.join(M.PAIRS)}")
    return run(threads=a.threads, detections=a.detections, pairs=pairs,
               parts=[p for p in PARTS if p not in skip], inspect_kwargs=inspect_kwargs,
               out_json=a.out, unoptimised=a.unoptimised, **preset)


if __name__ == "__main__":
    main()
