"""What a detection's mask and keypoint heads produced, over the image crop it came from.

::

    mask_logits_view(tr, 0)                        # logits, sigmoid probability, pasted mask
    keypoint_heatmaps_view(tr, 0, metadata=meta)   # one panel per keypoint, named
    trace_image(tr, 0)                             # (H, W, 3) uint8 RGB of the traced input

Colours: the channel order of ``tr.inputs[i]["image"]`` is the model's ``input_format``,
which the trace records (``tr.input_format``); ``input_format=None`` (the default) uses it,
and a trace that does not know it raises instead of guessing.

Shape legend: M the mask / heatmap side; K keypoints (or classes, for mask logits).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from .feature_maps import _arr
from .plot_image import PlotImage
from .png import to_numpy_image

__all__ = ["trace_image", "mask_logits_view", "keypoint_heatmaps_view", "image_format",
           "class_label"]

_FORMATS = ("RGB", "BGR")


def image_format(tr, input_format: Optional[str] = None) -> str:
    """The channel order of the trace's input images: ``input_format`` when given, else the
    one the trace recorded from its model (``tr.input_format``), else the traced model's if it
    is still alive; raises if none is known."""
    fmt = input_format
    if fmt is None:
        fmt = getattr(tr, "input_format", None)
    if fmt is None and getattr(tr, "model_ref", None) is not None:
        model = tr.model_ref()
        fmt = getattr(model, "input_format", None) if model is not None else None
    if fmt is None:
        raise ValueError("The channel order of this trace's input images is unknown (the traced "
                         "model has no input_format): pass input_format='RGB' or 'BGR'.")
    if str(fmt).upper() not in _FORMATS:
        raise ValueError(f"input_format must be 'RGB' or 'BGR', got {fmt!r}.")
    return str(fmt).upper()


def class_label(names: Optional[Sequence[str]], cls: Optional[int]) -> str:
    """``"pentagon (class 3)"`` when the class has a name, else ``"class 3"``."""
    if cls is None:
        return "unknown class"
    if names is not None and 0 <= cls < len(names):
        return f"{names[cls]} (class {cls})"
    return f"class {cls}"


def trace_image(tr, image: int = 0, *, input_format: Optional[str] = None,
                size: str = "original") -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``tr.inputs[image]["image"]``, resized to the original
    ``height`` x ``width`` (``size="original"``, where outputs live) or as given ("input").
    ``input_format``: see :func:`image_format` (None: the trace's)."""
    fmt = image_format(tr, input_format)
    if not 0 <= image < len(tr.inputs):
        raise IndexError(f"image {image} out of range for a trace of {len(tr.inputs)} images.")
    img = tr.inputs[image]["image"]
    if size == "original":
        h, w = tr.preprocess.original_sizes[image]
        if tuple(img.shape[-2:]) != (h, w):
            img = torch.nn.functional.interpolate(img[None].float(), size=(h, w), mode="bilinear",
                                                  align_corners=False)[0]
    elif size != "input":
        raise ValueError(f"size must be 'original' or 'input', got {size!r}.")
    return to_numpy_image(img.clamp(0, 255), fmt)


def _crop(img: np.ndarray, box) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """The pixels of ``img`` under ``box`` (x0, y0, x1, y1), at least one pixel, and the
    integer (xa, ya, xb, yb) cut."""
    x0, y0, x1, y1 = [float(v) for v in box]
    h, w = img.shape[:2]
    xa, ya = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.floor(y0), 0, h - 1))
    xb, yb = int(np.clip(np.ceil(x1), xa + 1, w)), int(np.clip(np.ceil(y1), ya + 1, h))
    return img[ya:yb, xa:xb], (xa, ya, xb, yb)


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def mask_logits_view(tr, index: int, *, image: int = 0, input_format: Optional[str] = None) -> PlotImage:
    """Detection ``index``: its raw M x M mask logits (of its predicted class), their sigmoid
    probability, and the pasted mask over the crop, each heat map with its colour bar.

    ``drawn``: ``logits`` the (M, M) array shown, ``crop`` the (h, w, 3) RGB crop before the
    mask overlay, ``pasted`` the mask over it, ``title`` (class name when the trace has names).
    """
    d = tr.detection(index, image=image)
    if d.mask_logits is None:
        raise ValueError("This trace has no mask logits (the model has no mask head).")
    logits = _arr(d.mask_logits)
    logits = logits[d.cls if logits.shape[0] > 1 else 0]  # (K, M, M) -> (M, M)
    img = trace_image(tr, image, input_format=input_format)
    crop, (xa, ya, xb, yb) = _crop(img, d.box)
    inst = tr.outputs[image]["instances"]
    out = PlotImage(1, 3, panel=2.1, suptitle=True, colorbars=True, layout="compressed")
    out.title(f"{class_label(tr.class_names, d.cls)}: mask logits {logits.shape[0]}x{logits.shape[1]}")
    lim = float(np.abs(logits).max()) or 1.0
    im = out.axes[0].imshow(logits, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    out.axes[0].set_title("logit", fontsize=8)
    out.colorbar(im, out.axes[0], "mask logit")
    im = out.axes[1].imshow(1 / (1 + np.exp(-logits)), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    out.axes[1].set_title("sigmoid", fontsize=8)
    out.colorbar(im, out.axes[1], "mask probability")
    shown = crop.astype(np.float32)
    if inst.has("pred_masks"):
        m = _arr(inst.pred_masks[index])[ya:yb, xa:xb] > 0.5
        shown[m] = shown[m] * 0.45 + np.array([255, 60, 60]) * 0.55
        out.drawn["pasted"] = m
    out.axes[2].imshow(shown.astype(np.uint8), interpolation="nearest")
    score = "" if d.score is None else f", score {d.score:.2f}"
    out.axes[2].set_title(f"pasted mask{score}", fontsize=8)
    for ax in out.axes:
        _off(ax)
    out.drawn["logits"] = logits
    out.drawn["crop"] = crop
    return out


def _keypoint_names(k: int, names: Optional[Sequence[str]], metadata: Any) -> list:
    if names is None and metadata is not None:
        names = metadata.get("keypoint_names", None)
        if names is not None and len(names) != k:
            raise ValueError(f"metadata's keypoint_names has {len(names)} names; the keypoint head "
                             f"predicts K={k} keypoints.")
    if names is None:
        return [f"keypoint {j}" for j in range(k)]
    if len(names) != k:
        raise ValueError(f"names has {len(names)} names; the keypoint head predicts K={k} keypoints.")
    return [str(n) for n in names]


def _spatial_softmax(hm: np.ndarray) -> np.ndarray:
    """(K, M, M) logits -> per-keypoint probabilities over the M x M cells (each map sums to 1)."""
    flat = hm.reshape(hm.shape[0], -1)
    flat = np.exp(flat - flat.max(1, keepdims=True))
    return (flat / flat.sum(1, keepdims=True)).reshape(hm.shape)


def keypoint_heatmaps_view(tr, index: int, *, image: int = 0, keypoints: Optional[Sequence[int]] = None,
                           names: Optional[Sequence[str]] = None, metadata: Any = None,
                           value: str = "logit", input_format: Optional[str] = None,
                           ncols: int = 5) -> PlotImage:
    """Detection ``index``: each keypoint's heatmap stretched over the box crop (with the
    predicted point), titled with the keypoint's name (``names``, else ``metadata``'s
    ``keypoint_names``, else "keypoint j").

    ``value``: "logit", what the keypoint head outputs, or "softmax", the probability over the
    M x M cells that the training loss normalises to (a softmax per keypoint). All panels share
    one colour scale and its bar. ``drawn["heatmaps"]`` is the (k, M, M) stack of logits of
    the keypoints shown, ``drawn["values"]`` what was drawn, ``drawn["titles"]`` the panel titles.
    """
    if value not in ("logit", "softmax"):
        raise ValueError(f"value must be 'logit' or 'softmax', got {value!r}.")
    d = tr.detection(index, image=image)
    if d.keypoint_heatmap is None:
        raise ValueError("This trace has no keypoint heatmaps (the model has no keypoint head).")
    hm = _arr(d.keypoint_heatmap)  # (K, M, M)
    k_all = hm.shape[0]
    labels = _keypoint_names(k_all, names, metadata)
    ks = list(range(k_all)) if keypoints is None else [int(k) for k in keypoints]
    bad = [k for k in ks if not 0 <= k < k_all]
    if bad or not ks:
        raise IndexError(f"keypoints: {bad[0] if bad else 'none'} chosen; expected indices in [0, {k_all}).")
    shown = hm if value == "logit" else _spatial_softmax(hm)
    shown = shown[ks]
    img = trace_image(tr, image, input_format=input_format)
    crop, (xa, ya, xb, yb) = _crop(img, d.box)
    x0, y0, x1, y1 = [float(v) for v in d.box]
    inst = tr.outputs[image]["instances"]
    kp = _arr(inst.pred_keypoints[index]) if inst.has("pred_keypoints") else None
    ncols = max(1, min(ncols, len(ks)))
    nrows = -(-len(ks) // ncols)
    out = PlotImage(nrows, ncols, panel=1.7, suptitle=True, layout="compressed")
    out.fig.set_size_inches(ncols * 1.7 + 0.8, out.fig.get_figheight())  # the shared colour bar
    m = hm.shape[-1]
    what = "logits" if value == "logit" else "probabilities"
    out.title(f"{class_label(tr.class_names, d.cls)}: keypoint {what} {m}x{m}")
    lo, hi = float(shown.min()), float(shown.max())
    titles, im = [], None
    for ax, j, a in zip(out.axes, ks, shown):
        ax.imshow(crop, extent=(xa, xb, yb, ya), interpolation="nearest")
        im = ax.imshow(a, extent=(x0, x1, y1, y0), cmap="jet", alpha=0.5, vmin=lo, vmax=hi,
                       interpolation="bilinear")
        if kp is not None:
            ax.scatter([kp[j, 0]], [kp[j, 1]], s=12, c="white", edgecolors="black", linewidths=0.5)
        ax.set_xlim(xa, xb)
        ax.set_ylim(yb, ya)
        ax.set_title(labels[j], fontsize=7)
        titles.append(labels[j])
    for ax in out.axes[len(ks):]:
        ax.axis("off")
    for ax in out.axes:
        _off(ax)
    unit = "keypoint logit" if value == "logit" else f"probability (softmax over {m}x{m})"
    out.colorbar(im, out.axes, unit)
    out.drawn["heatmaps"] = hm[ks]
    out.drawn["values"] = shown
    out.drawn["titles"] = titles
    return out
