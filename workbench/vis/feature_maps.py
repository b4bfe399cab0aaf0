"""Feature maps as arrays: the one shape convention of the feature helpers, and what they compute.

Shape convention (every feature helper: :func:`feature_map`, :func:`pca_rgb`,
:func:`feature_vector`, and in :mod:`.features` ``level_grid``, ``channel_montage``,
``pca_image``, ``activation_histograms``) -- ``features`` may be:

* a tensor / ndarray of shape (C, H, W): one image's map (``image`` must be 0), shown as the
  level ``"feature"``;
* a tensor / ndarray of shape (N, C, H, W): a batch; ``image=`` picks one;
* a dict of levels, name -> either of the above (e.g. ``tr.backbone.features``);
* a :class:`workbench.inspect.Trace` (or its ``BackboneOutput``): its backbone maps,
  ``source="features"`` (what the heads see, e.g. FPN "p2".."p6") or ``"bottom_up"`` (an
  FPN's "res2".."res5").

:func:`feature_levels` is the one reading of it (name -> (C, H, W) float32 array of one
image). Anything else -- a 2-D or 5-D array, an empty dict, an image index out of range, an
unknown level -- raises an error naming the argument, what it got and what was expected.

Cells and pixels: cell (y, x) of a level with stride s covers the input pixels
[y*s, (y+1)*s) x [x*s, (x+1)*s); :func:`pixel_to_cell` maps a pixel to its cell.

Shape legend: N images; C channels; H x W a feature map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["ONE_MAP", "FEATURE_SHAPES", "feature_levels", "one_level", "feature_map", "reduce_channels",
           "pca_rgb", "pca_of_map", "feature_vector", "pixel_to_cell", "REDUCTIONS"]

ONE_MAP = "(C, H, W) or (N, C, H, W) tensor/ndarray"
FEATURE_SHAPES = f"{ONE_MAP}, a dict name -> such tensors, or a Trace"
SOURCES = ("features", "bottom_up")

REDUCTIONS = {
    "mean": lambda a: a.mean(0),
    "max": lambda a: a.max(0),
    "norm": lambda a: np.sqrt((a * a).sum(0)),  # L2 over channels
    "absmean": lambda a: np.abs(a).mean(0),
}


def _arr(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _shape(x) -> tuple:
    return tuple(int(v) for v in x.shape)


def _backbone_maps(features, source: str) -> Optional[Dict[str, Any]]:
    """The maps of a Trace / BackboneOutput (None for anything else)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    from workbench.inspect.stages import BackboneOutput
    from workbench.inspect.trace import Trace

    if isinstance(features, Trace):
        if features.backbone is None:
            raise ValueError(f"features: this trace has no backbone maps"
                             f"{features.why_unavailable('preprocess/backbone')}.")
        features = features.backbone
    if not isinstance(features, BackboneOutput):
        return None
    maps = features.features if source == "features" else features.bottom_up
    if not maps:
        raise ValueError(f"features: the backbone has no {source!r} maps (an FPN has 'bottom_up'); "
                         f"use source='features'.")
    return maps


SINGLE = "feature"  # the level name of a lone tensor


def _as_levels(features, source: str, arg: str) -> Dict[str, Any]:
    """name -> tensor of any accepted form (not yet checked); a lone tensor is level SINGLE."""
    if isinstance(features, (Tensor, np.ndarray)):
        if source != "features":
            raise ValueError(f"source={source!r} reads a Trace's maps; {arg} is a single tensor.")
        return {SINGLE: features}
    if isinstance(features, Mapping):
        if source != "features":
            raise ValueError(f"source={source!r} reads a Trace's maps; {arg} is a dict of levels.")
        if len(features) == 0:
            raise ValueError(f"{arg} is an empty dict; expected name -> {ONE_MAP}.")
        return dict(features)
    maps = _backbone_maps(features, source)
    if maps is None:
        raise TypeError(f"{arg} must be a {FEATURE_SHAPES}; got {type(features).__name__}.")
    return dict(maps)


def _one_image(t, where: str, image: int) -> np.ndarray:
    """(C, H, W) float32 of ``image`` from a (C, H, W) or (N, C, H, W) tensor; ``where`` names
    it in errors."""
    if not isinstance(t, (Tensor, np.ndarray)):
        raise TypeError(f"{where} must be a tensor or ndarray of shape (C, H, W) or "
                        f"(N, C, H, W), got {type(t).__name__}.")
    if t.ndim == 4:
        n = int(t.shape[0])
        if not 0 <= image < n:
            raise IndexError(f"image={image} out of range: {where} has shape {_shape(t)}, a batch "
                             f"of {n} (N, C, H, W); expected 0 <= image < {n}.")
        return _arr(t[image])
    if t.ndim == 3:
        if image != 0:
            raise IndexError(f"image={image} given but {where} has shape {_shape(t)}, one image "
                             "(C, H, W); image= picks from an (N, C, H, W) batch.")
        return _arr(t)
    raise ValueError(f"{where} has shape {_shape(t)}; expected (C, H, W) for one image or "
                     "(N, C, H, W) for a batch.")


def feature_levels(features, *, image: int = 0, levels: Optional[Sequence[str]] = None,
                   source: str = "features", arg: str = "features") -> Dict[str, np.ndarray]:
    """name -> (C, H, W) float32 map of image ``image``, in the level order (see the module
    docstring for the accepted forms). ``levels`` picks and orders levels; ``arg`` is the
    argument name used in errors."""
    maps = _as_levels(features, source, arg)
    names = list(maps) if levels is None else list(levels)
    if not names:
        raise ValueError(f"levels is empty; {arg} has levels {list(maps)}.")
    unknown = [n for n in names if n not in maps]
    if unknown:
        raise ValueError(f"levels: unknown level {unknown[0]!r}; {arg} has levels {list(maps)}.")
    single = isinstance(features, (Tensor, np.ndarray))
    return {n: _one_image(maps[n], arg if single else f"{arg}[{n!r}]", image) for n in names}


def one_level(features, level: Optional[str] = None, *, image: int = 0, source: str = "features",
              arg: str = "features") -> Tuple[str, np.ndarray]:
    """(name, (C, H, W) map) of one level: ``level``, or the only one there is."""
    if level is not None and isinstance(features, (Tensor, np.ndarray)):
        raise ValueError(f"level={level!r} given but {arg} is a single tensor of shape "
                         f"{_shape(features)}, which has no levels.")
    maps = _as_levels(features, source, arg)
    if level is None:
        if len(maps) > 1:
            raise ValueError(f"level: {arg} has levels {list(maps)}; name one with level=.")
        level = next(iter(maps))
    elif level not in maps:
        raise ValueError(f"level: unknown level {level!r}; {arg} has levels {list(maps)}.")
    name, f = next(iter(feature_levels(features, image=image, levels=[level], source=source,
                                       arg=arg).items()))
    return name, f


def feature_map(features, channel: Optional[int] = None, reduce: str = "mean", *, image: int = 0,
                level: Optional[str] = None, source: str = "features") -> np.ndarray:
    """(H, W) view of one level: one ``channel``, or ``reduce`` over channels ("mean", "max",
    "norm" (L2), "absmean"). ``features`` in any form of the module docstring."""
    _, f = one_level(features, level, image=image, source=source)
    return reduce_channels(f, channel, reduce)


def reduce_channels(f: np.ndarray, channel: Optional[int], reduce: str) -> np.ndarray:
    """(H, W) from a (C, H, W) array: channel ``channel`` or the ``reduce`` over channels."""
    if channel is not None:
        if not -f.shape[0] <= channel < f.shape[0]:
            raise IndexError(f"channel {channel} out of range for {f.shape[0]} channels.")
        return f[channel]
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {sorted(REDUCTIONS)}, got {reduce!r}.")
    return REDUCTIONS[reduce](f)


def pca_rgb(features, *, image: int = 0, level: Optional[str] = None,
            source: str = "features") -> np.ndarray:
    """The first three principal components of one level's pixels as (H, W, 3) RGB in [0, 1]
    (each component min-max scaled; signs fixed so the largest loading is positive)."""
    _, f = one_level(features, level, image=image, source=source)
    return pca_of_map(f)


def pca_of_map(f: np.ndarray) -> np.ndarray:
    """:func:`pca_rgb` of one (C, H, W) array."""
    c, h, w = f.shape
    # torch's eigh on the (C, C) covariance: numpy's SVD of the (H*W, C) matrix is ~100x
    # slower here (threaded BLAS on a small shared machine) and the result is the same.
    x = torch.from_numpy(f.reshape(c, h * w).T.astype(np.float64))  # (C, H, W) -> (H*W, C)
    x = x - x.mean(0, keepdim=True)
    _, evecs = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
    k = min(3, c)
    comps = evecs[:, -k:].flip(1).T.numpy()  # (k, C), largest variance first
    x = x.numpy()
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    proj = x @ (comps * signs[:, None]).T  # (H*W, k)
    if k < 3:
        proj = np.concatenate([proj, np.zeros((len(proj), 3 - k))], axis=1)
    lo, hi = proj.min(0), proj.max(0)
    proj = (proj - lo) / np.where(hi > lo, hi - lo, 1.0)
    return proj.reshape(h, w, 3)  # (H*W, 3) -> (H, W, 3)


def feature_vector(features, image: int, level: Optional[str], y: int, x: int, *,
                   source: str = "features") -> np.ndarray:
    """The (C,) channel vector at cell (``y``, ``x``) of ``level`` of image ``image``
    (see :func:`pixel_to_cell` to find the cell under a pixel)."""
    name, f = one_level(features, level, image=image, source=source)
    _, h, w = f.shape
    for what, v, n in (("y", y, h), ("x", x, w)):
        if not (isinstance(v, (int, np.integer)) and 0 <= v < n):
            raise IndexError(f"cell {what}={v!r} out of range for level {name!r} of {h} x {w} cells "
                             f"(H x W); expected an integer 0 <= {what} < {n}.")
    return f[:, int(y), int(x)].copy()


def pixel_to_cell(grid, x: float, y: float, *, level: Optional[str] = None, image: int = 0,
                  space: str = "input") -> Tuple[int, int]:
    """(y, x) of the feature cell that image pixel (``x``, ``y``) falls in.

    ``grid`` says how the level's cells sit on the image:

    * a number: the level's stride (input pixels per cell): ``floor(pixel / stride)``;
    * ``((H, W), (image_h, image_w))``: the map's shape and the (padded) image size it was
      computed from: ``floor(pixel * H / image_h)`` (the stride rule when the size is a
      multiple of the stride);
    * a :class:`workbench.inspect.Trace` with ``level=``: the stride the trace recorded for
      that level (``trace.feature_strides``), else its map shape against the padded batch.
      ``space="original"`` takes (x, y) in original pixels (``trace.outputs``' and
      ``trace_image``'s), converted with ``trace.preprocess.scales[image]``; "input" in
      pixels of the network input.
    """
    from workbench.inspect.trace import Trace

    if space not in ("input", "original"):
        raise ValueError(f"space must be 'input' or 'original', got {space!r}.")
    if isinstance(grid, Trace):
        return _trace_cell(grid, x, y, level, image, space)
    if space != "input" or level is not None:
        raise ValueError("space= and level= need a Trace as grid; a stride or shapes map input pixels.")
    if isinstance(grid, (int, float, np.integer, np.floating)) and not isinstance(grid, bool):
        if grid <= 0:
            raise ValueError(f"grid: a stride must be > 0, got {grid}.")
        for what, v in (("x", x), ("y", y)):
            if v < 0:
                raise ValueError(f"pixel {what}={v} is negative; expected {what} >= 0.")
        return int(y // grid), int(x // grid)
    try:
        (fh, fw), (ih, iw) = grid
    except (TypeError, ValueError):
        raise TypeError(f"grid must be a stride, ((H, W), (image_h, image_w)) or a Trace; got "
                        f"{grid!r:.80}.") from None
    return _scaled_cell(x, y, (int(fh), int(fw)), (float(ih), float(iw)), f"an image of {ih} x {iw}")


def _scaled_cell(x, y, map_hw, image_hw, where: str) -> Tuple[int, int]:
    (fh, fw), (ih, iw) = map_hw, image_hw
    for what, v, n in (("x", x, iw), ("y", y, ih)):
        if not 0 <= v < n:
            raise ValueError(f"pixel {what}={v} outside {where} (H x W); expected 0 <= {what} < {n:g}.")
    return min(int(y * fh // ih), fh - 1), min(int(x * fw // iw), fw - 1)


def _trace_cell(tr, x, y, level, image, space) -> Tuple[int, int]:
    if tr.backbone is None or tr.preprocess is None:
        raise ValueError("grid: this trace has no backbone maps to map a pixel onto.")
    if level is None:
        raise ValueError(f"level: name the level of the trace's maps, one of {list(tr.backbone.features)}"
                         + (f" or {list(tr.backbone.bottom_up)}" if tr.backbone.bottom_up else "") + ".")
    tr._check_image(image)
    try:
        fmap = tr.backbone[level]
    except KeyError as e:
        raise ValueError(f"level: {e.args[0]}") from None
    ih, iw = tr.preprocess.image_sizes[image]
    if space == "original":
        oh, ow = tr.preprocess.original_sizes[image]
        for what, v, n in (("x", x, ow), ("y", y, oh)):
            if not 0 <= v < n:
                raise ValueError(f"pixel {what}={v} outside image {image}'s original {oh} x {ow} "
                                 f"pixels (H x W); expected 0 <= {what} < {n}.")
        sx, sy = tr.preprocess.scales[image]
        x, y = x * sx, y * sy
    else:
        for what, v, n in (("x", x, iw), ("y", y, ih)):
            if not 0 <= v < n:
                raise ValueError(f"pixel {what}={v} outside image {image}'s input {ih} x {iw} "
                                 f"pixels (H x W); expected 0 <= {what} < {n}.")
    fh, fw = int(fmap.shape[-2]), int(fmap.shape[-1])
    stride = (tr.feature_strides or {}).get(level)
    if stride:
        return min(int(y // stride), fh - 1), min(int(x // stride), fw - 1)
    ph, pw = tr.preprocess.images.tensor.shape[-2:]
    return _scaled_cell(x, y, (fh, fw), (float(ph), float(pw)), "the padded batch")
