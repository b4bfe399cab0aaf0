"""Pictures of what is inside a detector: feature maps, activations, ROI levels, head outputs, weights.

::

    tr = wi.trace(model, inputs)
    level_grid(tr)                                   # one panel per FPN level of image 0
    level_grid(tr, source="bottom_up", image=1)      # the FPN's bottom-up stages of image 1
    channel_montage(tr, level="p3")                  # first 64 channels of p3
    pca_rgb(tr.backbone.features["p2"], image=0)     # (H, W, 3) in [0, 1]
    activation_histograms(tr, source="bottom_up")    # per-stage value histograms
    feature_vector(tr, 0, "p3", y, x)                # (C,) at a cell; pixel_to_cell(tr, x, y, level="p3")
    channel_vector_plot(v, title="p3 (4, 7)")        # that vector as a bar plot
    rois_per_level(tr, model)                        # ROIs drawn over the map they pooled from
    mask_logits_view(tr, 0); keypoint_heatmaps_view(tr, 0, metadata=meta)
    weight_stats(model).flagged()                    # dead / constant / overflowing tensors

Shapes: every feature helper takes ``features`` as a (C, H, W) tensor (one image), an
(N, C, H, W) tensor (a batch; ``image=`` picks one), a dict of levels name -> such tensors,
or a ``Trace`` (its backbone maps, ``source="features"`` or ``"bottom_up"``); see
:mod:`.feature_maps`, which reads them all through one function (``feature_levels``).

Every picture is a :class:`PlotImage` (``get_image()``, ``to_png_bytes()``, ``save()``, and
``drawn``: the arrays shown, so tests can compare them with the trace's tensors). Heat maps
carry a colour bar naming their unit (``drawn["colorbars"]``). Head views (mask logits,
keypoint heatmaps, ``trace_image``) live in :mod:`.head_views`, weight statistics in
:mod:`.weights`; this module re-exports them.

Shape legend: N images; C channels; H x W a feature map.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
from torch import Tensor, nn

from .feature_maps import (FEATURE_SHAPES, _arr, feature_levels, feature_map, feature_vector,
                           one_level, pca_of_map, pca_rgb, pixel_to_cell, reduce_channels)
from .head_views import _crop, keypoint_heatmaps_view, mask_logits_view, trace_image  # noqa: F401
from .plot_image import DPI, PlotImage
from .weights import WeightStats, weight_stats

__all__ = ["PlotImage", "feature_levels", "feature_map", "level_grid", "channel_montage", "pca_rgb",
           "pca_image", "activation_histograms", "feature_vector", "pixel_to_cell",
           "channel_vector_plot", "rois_per_level", "mask_logits_view", "keypoint_heatmaps_view",
           "trace_image", "WeightStats", "weight_stats", "FEATURE_SHAPES"]

_UNITS = {"mean": "mean activation", "max": "max activation", "norm": "L2 norm over channels",
          "absmean": "mean |activation|"}


def value_unit(channel: Optional[int], reduce: str) -> str:
    """The colour-bar label of a :func:`feature_map` view."""
    return f"activation (channel {channel})" if channel is not None else _UNITS.get(reduce, reduce)


def _grid(n: int, ncols: int):
    ncols = max(1, min(ncols, n))
    return max(1, math.ceil(n / ncols)), ncols


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _panel(n: int) -> float:
    """Panel side in inches: one map large (300 px), several smaller."""
    return 3.0 if n == 1 else 2.1


def level_grid(features, *, image: int = 0, channel: Optional[int] = None, reduce: str = "mean",
               levels: Optional[Sequence[str]] = None, source: str = "features", cmap: str = "viridis",
               ncols: int = 3) -> PlotImage:
    """One panel per level: one ``channel``, or ``reduce`` over channels (see
    :func:`feature_map`), each with its colour bar. ``features``: any form of the module
    docstring. ``drawn["arrays"][name]`` is the (H, W) array shown."""
    maps = feature_levels(features, image=image, levels=levels, source=source)
    arrays = {name: reduce_channels(f, channel, reduce) for name, f in maps.items()}
    nrows, ncols = _grid(len(arrays), ncols)
    out = PlotImage(nrows, ncols, panel=_panel(len(arrays)), colorbars=True, layout="compressed")
    out.drawn["arrays"] = arrays
    unit = value_unit(channel, reduce)
    for ax, (name, a) in zip(out.axes, arrays.items()):
        im = ax.imshow(a, cmap=cmap, interpolation="nearest")
        ax.set_title(f"{name} {a.shape[0]}x{a.shape[1]}", fontsize=8)
        out.colorbar(im, ax, unit)
    for ax in out.axes[len(arrays):]:
        ax.axis("off")
    for ax in out.axes:
        _off(ax)
    return out


def channel_montage(features, channels: Optional[Sequence[int]] = None, *, image: int = 0,
                    level: Optional[str] = None, source: str = "features", ncols: int = 8,
                    max_channels: int = 64, cmap: str = "viridis") -> PlotImage:
    """Channels of one level side by side, each min-max scaled on its own (the colour bar says
    so). ``features``: any form of the module docstring; ``level`` picks one of several.
    ``drawn["tiles"]`` is the tiled array shown (NaN between tiles), ``drawn["channels"]``."""
    name, f = one_level(features, level, image=image, source=source)
    c, h, w = f.shape
    chans = list(range(min(c, max_channels))) if channels is None else [int(k) for k in channels]
    bad = [k for k in chans if not 0 <= k < c]
    if bad or not chans:
        raise IndexError(f"channels: {bad[0] if bad else 'none'} chosen; level {name!r} has "
                         f"{c} channels, expected indices in [0, {c}).")
    nrows, ncols = _grid(len(chans), ncols)
    # One tiled array and one imshow (a subplot per channel costs ~15 ms each).
    tiles = np.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1), np.nan, dtype=np.float32)
    for k, ch in enumerate(chans):
        a = f[ch]
        lo, hi = float(a.min()), float(a.max())
        r, q = divmod(k, ncols)
        tiles[r * (h + 1): r * (h + 1) + h, q * (w + 1): q * (w + 1) + w] = (a - lo) / (hi - lo) if hi > lo else 0.5
    scale = max(1.0, 48.0 / max(h, w))  # small maps are enlarged to 48 px tiles
    tiles_w, tiles_h = tiles.shape[1] * scale / DPI, tiles.shape[0] * scale / DPI
    out = PlotImage(1, 1, panel=1.0, layout="compressed")
    out.fig.set_size_inches(max(tiles_w, 2.0) + 0.8, tiles_h + 0.35)  # room for the colour bar and title
    ax = out.axes[0]
    im = ax.imshow(tiles, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"{name} {h}x{w}: channels {chans[0]}..{chans[-1]}", fontsize=8)
    out.colorbar(im, ax, "per-channel min-max")
    _off(ax)
    out.drawn["channels"] = chans
    out.drawn["tiles"] = tiles
    return out


def pca_image(features, *, image: int = 0, levels: Optional[Sequence[str]] = None,
              source: str = "features", ncols: int = 3) -> PlotImage:
    """:func:`pca_rgb` of every level (components 1, 2, 3 as red, green, blue);
    ``drawn["arrays"][name]`` the (H, W, 3) shown."""
    maps = feature_levels(features, image=image, levels=levels, source=source)
    nrows, ncols = _grid(len(maps), ncols)
    out = PlotImage(nrows, ncols, panel=_panel(len(maps)), layout="compressed")
    out.drawn["arrays"] = {}
    for ax, (name, f) in zip(out.axes, maps.items()):
        rgb = pca_of_map(f)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"{name} {f.shape[1]}x{f.shape[2]}: PCA 1-3 as RGB", fontsize=8)
        out.drawn["arrays"][name] = rgb
    for ax in out.axes[len(maps):]:
        ax.axis("off")
    for ax in out.axes:
        _off(ax)
    return out


def activation_histograms(activations, *, image: int = 0, levels: Optional[Sequence[str]] = None,
                          source: str = "features", bins: int = 60, ncols: int = 4,
                          log: bool = True) -> PlotImage:
    """A value histogram per level of one image, and the fraction of exact zeros (dead ReLUs)
    in each title. ``activations``: any form of the module docstring (a Trace with
    ``source="bottom_up"`` for the ResNet stages). ``drawn["hist"][name] = (counts, edges)``."""
    maps = feature_levels(activations, image=image, levels=levels, source=source, arg="activations")
    nrows, ncols = _grid(len(maps), ncols)
    out = PlotImage(nrows, ncols, panel=2.2, layout="constrained")
    out.drawn["hist"] = {}
    for ax, (name, f) in zip(out.axes, maps.items()):
        a = f.reshape(-1)
        a = a[np.isfinite(a)]
        counts, edges = np.histogram(a, bins=bins) if a.size else (np.zeros(bins), np.linspace(0, 1, bins + 1))
        ax.stairs(counts, edges, fill=True)
        if log:
            ax.set_yscale("symlog")
        zero = float((a == 0).mean()) if a.size else 0.0
        ax.set_title(f"{name}: {zero * 100:.0f}% zero", fontsize=8)
        ax.set_xlabel("activation", fontsize=7, labelpad=1)
        if ax in out.axes[::ncols]:
            ax.set_ylabel("values", fontsize=7, labelpad=1)
        ax.tick_params(labelsize=6)
        out.drawn["hist"][name] = (counts, edges)
    for ax in out.axes[len(maps):]:
        ax.axis("off")
    return out


def channel_vector_plot(vec, *, title: str = "", ylabel: str = "activation") -> PlotImage:
    """A (C,) channel vector (e.g. :func:`feature_vector`) as a bar plot over channel index,
    about 400 x 170 px; the largest channel is marked. ``drawn["vector"]`` the values."""
    v = _arr(vec) if isinstance(vec, (Tensor, np.ndarray)) else np.asarray(vec, dtype=np.float32)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"vec has shape {tuple(v.shape)}; expected a non-empty channel vector (C,).")
    out = PlotImage(1, 1, panel=1.0, layout="constrained")
    out.fig.set_size_inches(4.0, 1.7)
    ax = out.axes[0]
    edges = np.arange(v.size + 1) - 0.5
    ax.stairs(v, edges, baseline=0.0, fill=True, color="tab:blue")
    ax.axhline(0.0, color="black", linewidth=0.5)
    top = int(np.nanargmax(v)) if np.isfinite(v).any() else 0
    ax.plot([top], [v[top]], marker="v", color="tab:red", markersize=4)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(f"channel (max: {top})", fontsize=7, labelpad=1)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=8)
    out.drawn.update(vector=v, top_channel=top, title=title)
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
                   reduce: str = "absmean", cmap: str = "gray", ncols: int = 2) -> PlotImage:
    """Each box-pooler level's map (``reduce`` over channels, with its colour bar) and the ROIs
    (proposals) assigned to it, drawn in that map's cells. ``drawn["rois"][name]`` holds the
    (n, 4) boxes in level cells and ``drawn["counts"]`` how many ROIs each level received
    (all of them, drawn or not)."""
    if tr.box is None:
        raise ValueError("This trace has no box branch (RetinaNet / RPN-only / given detections).")
    from matplotlib.collections import PolyCollection

    names = _box_levels(tr, model)
    maps = feature_levels(tr, image=image, levels=names)
    stage = tr.box.stages[-1]
    offset = sum(len(p) for p in stage.proposals[:image])
    boxes = _arr(stage.proposals[image].proposal_boxes.tensor)
    lvl = np.zeros(len(boxes), dtype=np.int64) if stage.pooler_level is None else \
        stage.pooler_level[offset: offset + len(boxes)].cpu().numpy()
    pad_h, pad_w = tr.preprocess.images.tensor.shape[-2:]
    nrows, ncols = _grid(len(names), ncols)
    out = PlotImage(nrows, ncols, panel=2.6, colorbars=True, layout="compressed")
    out.drawn.update(rois={}, counts={}, arrays={})
    for k, (ax, name) in enumerate(zip(out.axes, names)):
        a = reduce_channels(maps[name], None, reduce)
        sy, sx = a.shape[0] / pad_h, a.shape[1] / pad_w  # input pixels -> level cells
        sel = np.nonzero(lvl == k)[0]
        b = boxes[sel[:max_per_level]] * np.array([sx, sy, sx, sy])
        im = ax.imshow(a, cmap=cmap, interpolation="nearest")
        ax.add_collection(PolyCollection([[(x0, y0), (x1, y0), (x1, y1), (x0, y1)] for x0, y0, x1, y1 in b],
                                         facecolors="none", edgecolors="tab:orange", linewidths=0.8))
        ax.set_xlim(-0.5, a.shape[1] - 0.5)
        ax.set_ylim(a.shape[0] - 0.5, -0.5)
        ax.set_title(f"{name} {a.shape[0]}x{a.shape[1]}: {len(sel)} ROIs", fontsize=8)
        out.colorbar(im, ax, value_unit(None, reduce))
        out.drawn["rois"][name], out.drawn["counts"][name], out.drawn["arrays"][name] = b, len(sel), a
    for ax in out.axes[len(names):]:
        ax.axis("off")
    for ax in out.axes:
        _off(ax)
    return out
