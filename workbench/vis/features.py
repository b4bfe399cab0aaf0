"""Pictures of what is inside a detector: feature maps, activations, ROI levels, head outputs, weights.

::

    tr = wi.trace(model, inputs)
    level_grid(tr.backbone.features).get_image()         # one panel per FPN level
    channel_montage(tr.backbone.features["p3"][0])       # first 64 channels of p3
    pca_rgb(tr.backbone.features["p2"][0])               # (Hi, Wi, 3) in [0, 1]
    activation_histograms(tr.backbone.bottom_up)          # per-stage value histograms
    rois_per_level(tr, model)                             # ROIs drawn over the map they pooled from
    mask_logits_view(tr, 0); keypoint_heatmaps_view(tr, 0)
    weight_stats(model).flagged()                         # dead / constant / overflowing tensors

Every picture is a :class:`PlotImage` (``get_image()``, ``to_png_bytes()``, ``save()``, and
``drawn``: the arrays shown, so tests can compare them with the trace's tensors).

Shape legend: C channels; Hi x Wi a feature map; M the mask / heatmap side; K keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from .visualizer import VisImage, encode_png, to_numpy_image

__all__ = ["PlotImage", "feature_map", "level_grid", "channel_montage", "pca_rgb", "pca_image",
           "activation_histograms", "rois_per_level", "mask_logits_view", "keypoint_heatmaps_view",
           "trace_image", "WeightStats", "weight_stats"]

_DPI = 100


class PlotImage:
    """A multi-panel matplotlib figure rendered with Agg (same interface as ``VisImage``)."""

    def __init__(self, nrows: int, ncols: int, panel: float = 2.2, *, title_space: bool = True):
        self.fig = Figure(figsize=(ncols * panel, nrows * (panel + (0.25 if title_space else 0))), dpi=_DPI)
        self.canvas = FigureCanvasAgg(self.fig)
        self.axes = [self.fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
        top = 1.0 - 0.3 / (nrows * (panel + 0.25)) if title_space else 0.98
        self.fig.subplots_adjust(left=0.03, right=0.97, bottom=0.03, top=top, wspace=0.12, hspace=0.3)
        self.drawn: Dict[str, Any] = {}
        self._cache: Optional[np.ndarray] = None

    def get_image(self) -> np.ndarray:
        if self._cache is None:
            self.canvas.draw()
            self._cache = np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()
        return self._cache

    def to_png_bytes(self) -> bytes:
        return encode_png(self.get_image())

    save = VisImage.save
    _repr_png_ = VisImage._repr_png_


def _arr(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def feature_map(feature, channel: Optional[int] = None, reduce: str = "mean") -> np.ndarray:
    """(Hi, Wi) view of a (C, Hi, Wi) map: one ``channel``, or ``reduce`` over channels
    ("mean", "max", "norm" (L2), "absmean")."""
    f = _arr(feature)
    if f.ndim != 3:
        raise ValueError(f"Expected a feature map of shape (C, Hi, Wi), got {f.shape}.")
    if channel is not None:
        if not -f.shape[0] <= channel < f.shape[0]:
            raise IndexError(f"channel {channel} out of range for {f.shape[0]} channels.")
        return f[channel]
    ops = {"mean": lambda a: a.mean(0), "max": lambda a: a.max(0),
           "norm": lambda a: np.sqrt((a * a).sum(0)), "absmean": lambda a: np.abs(a).mean(0)}
    if reduce not in ops:
        raise ValueError(f"reduce must be one of {sorted(ops)}, got {reduce!r}.")
    return ops[reduce](f)


def _grid(n: int, ncols: int):
    ncols = max(1, min(ncols, n))
    return max(1, math.ceil(n / ncols)), ncols


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def level_grid(features: Dict[str, Any], *, image: int = 0, channel: Optional[int] = None,
               reduce: str = "mean", levels: Optional[Sequence[str]] = None, cmap: str = "viridis",
               ncols: int = 5) -> PlotImage:
    """One panel per level (``features``: name -> (N, C, Hi, Wi) or (C, Hi, Wi)).

    ``drawn["arrays"][name]`` is the (Hi, Wi) array shown.
    """
    names = list(levels) if levels is not None else list(features)
    nrows, ncols = _grid(len(names), ncols)
    out = PlotImage(nrows, ncols)
    out.drawn["arrays"] = {}
    for ax, name in zip(out.axes, names):
        f = features[name]
        f = f[image] if f.ndim == 4 else f  # (N, C, Hi, Wi) -> (C, Hi, Wi)
        a = feature_map(f, channel, reduce)
        ax.imshow(a, cmap=cmap, interpolation="nearest")
        what = f"ch {channel}" if channel is not None else reduce
        ax.set_title(f"{name} {a.shape[0]}x{a.shape[1]} ({what})", fontsize=8)
        out.drawn["arrays"][name] = a
    for ax in out.axes:
        _off(ax)
    return out


def channel_montage(feature, channels: Optional[Sequence[int]] = None, *, ncols: int = 8,
                    max_channels: int = 64, cmap: str = "viridis") -> PlotImage:
    """Channels of one (C, Hi, Wi) map side by side, each on its own colour scale."""
    f = _arr(feature)
    if f.ndim != 3:
        raise ValueError(f"Expected a feature map of shape (C, Hi, Wi), got {f.shape}.")
    chans = list(range(min(f.shape[0], max_channels))) if channels is None else list(channels)
    nrows, ncols = _grid(len(chans), ncols)
    _, h, w = f.shape
    # One tiled array and one imshow (a subplot per channel costs ~15 ms each).
    tiles = np.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1), np.nan, dtype=np.float32)
    for k, c in enumerate(chans):
        a = f[c]
        lo, hi = float(a.min()), float(a.max())
        r, q = divmod(k, ncols)
        tiles[r * (h + 1): r * (h + 1) + h, q * (w + 1): q * (w + 1) + w] = (a - lo) / (hi - lo) if hi > lo else 0.5
    scale = max(1.0, 64.0 / max(h, w))
    out = PlotImage(1, 1, panel=1.0)
    out.fig.set_size_inches(max(ncols * w * scale / _DPI, 2.0), max(nrows * h * scale / _DPI, 1.0) + 0.3)
    ax = out.axes[0]
    ax.imshow(tiles, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"channels {chans[0]}..{chans[-1]} (each min-max scaled)" if chans else "no channels", fontsize=8)
    _off(ax)
    out.drawn["channels"] = chans
    out.drawn["tiles"] = tiles
    return out


def pca_rgb(feature) -> np.ndarray:
    """The first three principal components of a (C, Hi, Wi) map's pixels as (Hi, Wi, 3) RGB in
    [0, 1] (each component min-max scaled; signs fixed so the largest loading is positive)."""
    f = _arr(feature)
    if f.ndim != 3:
        raise ValueError(f"Expected a feature map of shape (C, Hi, Wi), got {f.shape}.")
    c, h, w = f.shape
    # torch's eigh on the (C, C) covariance: numpy's SVD of the (Hi*Wi, C) matrix is ~100x
    # slower here (threaded BLAS on a small shared machine) and the result is the same.
    x = torch.from_numpy(f.reshape(c, h * w).T.astype(np.float64))  # (C, Hi, Wi) -> (Hi*Wi, C)
    x = x - x.mean(0, keepdim=True)
    evals, evecs = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
    k = min(3, c)
    comps = evecs[:, -k:].flip(1).T.numpy()  # (k, C), largest variance first
    x = x.numpy()
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    proj = x @ (comps * signs[:, None]).T  # (Hi*Wi, k)
    if k < 3:
        proj = np.concatenate([proj, np.zeros((len(proj), 3 - k))], axis=1)
    lo, hi = proj.min(0), proj.max(0)
    proj = (proj - lo) / np.where(hi > lo, hi - lo, 1.0)
    return proj.reshape(h, w, 3)  # (Hi*Wi, 3) -> (Hi, Wi, 3)


def pca_image(features: Dict[str, Any], *, image: int = 0, levels: Optional[Sequence[str]] = None,
              ncols: int = 5) -> PlotImage:
    """:func:`pca_rgb` of every level; ``drawn["arrays"][name]`` the (Hi, Wi, 3) shown."""
    names = list(levels) if levels is not None else list(features)
    nrows, ncols = _grid(len(names), ncols)
    out = PlotImage(nrows, ncols)
    out.drawn["arrays"] = {}
    for ax, name in zip(out.axes, names):
        f = features[name]
        rgb = pca_rgb(f[image] if f.ndim == 4 else f)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"{name} PCA", fontsize=8)
        out.drawn["arrays"][name] = rgb
    for ax in out.axes:
        _off(ax)
    return out


def activation_histograms(activations: Dict[str, Any], *, bins: int = 60, ncols: int = 4,
                          log: bool = True) -> PlotImage:
    """A value histogram per stage; ``drawn["hist"][name] = (counts, edges)``, plus the
    fraction of exact zeros (dead ReLUs) in each title."""
    names = list(activations)
    nrows, ncols = _grid(len(names), ncols)
    out = PlotImage(nrows, ncols, panel=2.6)
    out.drawn["hist"] = {}
    for ax, name in zip(out.axes, names):
        a = _arr(activations[name]).reshape(-1)
        a = a[np.isfinite(a)]
        counts, edges = np.histogram(a, bins=bins) if a.size else (np.zeros(bins), np.linspace(0, 1, bins + 1))
        ax.stairs(counts, edges, fill=True)
        if log:
            ax.set_yscale("symlog")
        zero = float((a == 0).mean()) if a.size else 0.0
        ax.set_title(f"{name}: {zero * 100:.0f}% zero", fontsize=8)
        ax.tick_params(labelsize=6)
        out.drawn["hist"][name] = (counts, edges)
    for ax in out.axes[len(names):]:
        ax.axis("off")
    return out


def _box_levels(tr, model: Optional[nn.Module]) -> List[str]:
    if model is not None and hasattr(model, "roi_heads") and hasattr(model.roi_heads, "box_in_features"):
        return list(model.roi_heads.box_in_features)
    # Without the model: the largest maps, as many as the pooler levels used.
    lvl = tr.box.stages[-1].pooler_level
    n = 1 if lvl is None else int(lvl.max()) + 1
    names = sorted(tr.backbone.features, key=lambda k: -tr.backbone.features[k].shape[-1])
    return names[:n]


def rois_per_level(tr, model: Optional[nn.Module] = None, *, image: int = 0, max_per_level: int = 100,
                   reduce: str = "absmean", cmap: str = "gray") -> PlotImage:
    """Each box-pooler level's map with the ROIs (proposals) assigned to it, drawn in that map's
    cells. ``drawn["rois"][name]`` holds the (n, 4) boxes in level cells and ``drawn["counts"]``
    how many ROIs each level received (all of them, drawn or not)."""
    if tr.box is None:
        raise ValueError("This trace has no box branch (RetinaNet / RPN-only / given detections).")
    names = _box_levels(tr, model)
    stage = tr.box.stages[-1]
    offset = sum(len(p) for p in stage.proposals[:image])
    props = stage.proposals[image]
    boxes = _arr(props.proposal_boxes.tensor)
    lvl = np.zeros(len(boxes), dtype=np.int64) if stage.pooler_level is None else \
        stage.pooler_level[offset: offset + len(boxes)].cpu().numpy()
    pad_h, pad_w = tr.preprocess.images.tensor.shape[-2:]
    out = PlotImage(1, len(names), panel=3.0)
    out.drawn.update(rois={}, counts={}, arrays={})
    for k, (ax, name) in enumerate(zip(out.axes, names)):
        f = tr.backbone.features[name][image]
        a = feature_map(f, None, reduce)
        sy, sx = a.shape[0] / pad_h, a.shape[1] / pad_w  # input pixels -> level cells
        sel = np.nonzero(lvl == k)[0]
        b = boxes[sel[:max_per_level]] * np.array([sx, sy, sx, sy])
        ax.imshow(a, cmap=cmap, interpolation="nearest")
        from matplotlib.collections import PolyCollection
        ax.add_collection(PolyCollection([[(x0, y0), (x1, y0), (x1, y1), (x0, y1)] for x0, y0, x1, y1 in b],
                                         facecolors="none", edgecolors="tab:orange", linewidths=0.8))
        ax.set_xlim(-0.5, a.shape[1] - 0.5)
        ax.set_ylim(a.shape[0] - 0.5, -0.5)
        ax.set_title(f"{name}: {len(sel)} ROIs", fontsize=9)
        _off(ax)
        out.drawn["rois"][name], out.drawn["counts"][name], out.drawn["arrays"][name] = b, len(sel), a
    return out


def trace_image(tr, image: int = 0, *, input_format: str = "BGR", size: str = "original") -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``tr.inputs[image]["image"]``, resized to the original
    ``height`` x ``width`` (``size="original"``, where outputs live) or as given ("input")."""
    img = tr.inputs[image]["image"]
    if size == "original":
        h, w = tr.preprocess.original_sizes[image]
        if tuple(img.shape[-2:]) != (h, w):
            img = torch.nn.functional.interpolate(img[None].float(), size=(h, w), mode="bilinear",
                                                  align_corners=False)[0]
    elif size != "input":
        raise ValueError(f"size must be 'original' or 'input', got {size!r}.")
    return to_numpy_image(img.clamp(0, 255), input_format)


def _crop(img: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = [float(v) for v in box]
    h, w = img.shape[:2]
    xa, ya = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.floor(y0), 0, h - 1))
    xb, yb = int(np.clip(np.ceil(x1), xa + 1, w)), int(np.clip(np.ceil(y1), ya + 1, h))
    return img[ya:yb, xa:xb], (xa, ya, xb, yb)


def mask_logits_view(tr, index: int, *, image: int = 0, input_format: str = "BGR") -> PlotImage:
    """Detection ``index``: its raw M x M mask logits (predicted class), their sigmoid, and the
    pasted mask over the crop. ``drawn["logits"]`` is the (M, M) array shown."""
    d = tr.detection(index, image=image)
    if d.mask_logits is None:
        raise ValueError("This trace has no mask logits (the model has no mask head).")
    logits = _arr(d.mask_logits)
    logits = logits[d.cls if logits.shape[0] > 1 else 0]  # (K, M, M) -> (M, M)
    img = trace_image(tr, image, input_format=input_format)
    crop, (xa, ya, xb, yb) = _crop(img, d.box)
    inst = tr.outputs[image]["instances"]
    out = PlotImage(1, 3, panel=2.6)
    lim = float(np.abs(logits).max()) or 1.0
    out.axes[0].imshow(logits, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    out.axes[0].set_title(f"logits {logits.shape[0]}x{logits.shape[1]} ({d.class_name})", fontsize=8)
    out.axes[1].imshow(1 / (1 + np.exp(-logits)), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    out.axes[1].set_title("sigmoid", fontsize=8)
    shown = crop.astype(np.float32)
    if inst.has("pred_masks"):
        m = _arr(inst.pred_masks[index])[ya:yb, xa:xb] > 0.5
        shown[m] = shown[m] * 0.45 + np.array([255, 60, 60]) * 0.55
        out.drawn["pasted"] = m
    out.axes[2].imshow(shown.astype(np.uint8), interpolation="nearest")
    out.axes[2].set_title(f"pasted, score {d.score:.2f}", fontsize=8)
    for ax in out.axes:
        _off(ax)
    out.drawn["logits"] = logits
    return out


def keypoint_heatmaps_view(tr, index: int, *, image: int = 0, keypoints: Optional[Sequence[int]] = None,
                           names: Optional[Sequence[str]] = None, input_format: str = "BGR",
                           ncols: int = 6) -> PlotImage:
    """Detection ``index``: each keypoint's heatmap stretched over the box crop (with the
    predicted point). ``drawn["heatmaps"]`` is the (k, M, M) stack shown."""
    d = tr.detection(index, image=image)
    if d.keypoint_heatmap is None:
        raise ValueError("This trace has no keypoint heatmaps (the model has no keypoint head).")
    hm = _arr(d.keypoint_heatmap)  # (K, M, M)
    ks = list(range(hm.shape[0])) if keypoints is None else list(keypoints)
    img = trace_image(tr, image, input_format=input_format)
    crop, (xa, ya, xb, yb) = _crop(img, d.box)
    x0, y0, x1, y1 = [float(v) for v in d.box]
    inst = tr.outputs[image]["instances"]
    kp = _arr(inst.pred_keypoints[index]) if inst.has("pred_keypoints") else None
    nrows, ncols = _grid(len(ks), ncols)
    out = PlotImage(nrows, ncols, panel=1.8)
    for ax, k in zip(out.axes, ks):
        ax.imshow(crop, extent=(xa, xb, yb, ya), interpolation="nearest")
        ax.imshow(hm[k], extent=(x0, x1, y1, y0), cmap="jet", alpha=0.5, interpolation="bilinear")
        if kp is not None:
            ax.scatter([kp[k, 0]], [kp[k, 1]], s=12, c="white", edgecolors="black", linewidths=0.5)
        ax.set_xlim(xa, xb)
        ax.set_ylim(yb, ya)
        ax.set_title(names[k] if names and k < len(names) else str(k), fontsize=7)
    for ax in out.axes:
        _off(ax)
    out.drawn["heatmaps"] = hm[ks]
    return out


# -- weights -------------------------------------------------------------------------------------

@dataclass
class WeightStats:
    """One row per parameter / buffer: name, shape, mean, std, min, max, fraction of zeros and
    ``flags`` ("dead": all zero, "constant": one value, "nonfinite": NaN / inf, "overflow":
    |x| beyond ``overflow``, fp16's largest value by default)."""

    rows: List[Dict[str, Any]]

    def flagged(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if r["flags"]]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        lines = [f"{'name':<48} {'shape':<18} {'mean':>9} {'std':>9} {'absmax':>9} {'zero%':>6}  flags"]
        for r in self.rows:
            lines.append(f"{r['name'][:48]:<48} {str(r['shape']):<18} {r['mean']:>9.3g} {r['std']:>9.3g} "
                         f"{r['absmax']:>9.3g} {r['zero_frac'] * 100:>6.1f}  {','.join(r['flags'])}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("name", "shape", "mean", "std", "absmax", "zero %", "flags"))
        body = []
        for r in self.rows:
            style = ' style="background:#fdd"' if r["flags"] else ""
            body.append(f"<tr{style}><td>{r['name']}</td><td>{r['shape']}</td><td>{r['mean']:.3g}</td>"
                        f"<td>{r['std']:.3g}</td><td>{r['absmax']:.3g}</td><td>{r['zero_frac'] * 100:.1f}</td>"
                        f"<td>{','.join(r['flags'])}</td></tr>")
        return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def weight_stats(model: nn.Module, *, buffers: bool = True, overflow: float = 65504.0) -> WeightStats:
    """Statistics of every parameter (and buffer) of ``model``; see :class:`WeightStats`."""
    items = list(model.named_parameters())
    if buffers:
        items += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    rows = []
    with torch.no_grad():
        for name, t in items:
            x = t.detach().float()
            finite = torch.isfinite(x)
            xf = x[finite]
            flags = []
            if not bool(finite.all()):
                flags.append("nonfinite")
            if xf.numel() and float(xf.abs().max()) > overflow:
                flags.append("overflow")
            if x.numel() and bool((x == 0).all()):
                flags.append("dead")
            elif x.numel() > 1 and xf.numel() == x.numel() and not name.endswith(("pixel_mean", "pixel_std")) and float(xf.max()) == float(xf.min()):
                flags.append("constant")
            rows.append({"name": name, "shape": tuple(t.shape),
                         "mean": float(xf.mean()) if xf.numel() else float("nan"),
                         "std": float(xf.std()) if xf.numel() > 1 else 0.0,
                         "min": float(xf.min()) if xf.numel() else float("nan"),
                         "max": float(xf.max()) if xf.numel() else float("nan"),
                         "absmax": float(xf.abs().max()) if xf.numel() else float("nan"),
                         "zero_frac": float((x == 0).float().mean()) if x.numel() else 0.0,
                         "flags": flags})
    return WeightStats(rows)
