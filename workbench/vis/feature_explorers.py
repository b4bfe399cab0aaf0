"""Explorers of what comes before the boxes: backbone feature maps and the RPN's proposals and
anchors. A click on a feature map shows that cell's channel vector; a click on the proposals
picture picks the anchor cell under it."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from .detection_explorer import image_slider, resolve_input_format
from .explorer_base import Explorer, _widgets
from .features import (PlotImage, activation_histograms, channel_montage, level_grid, pca_image,
                       rois_per_level, trace_image)
from .visualizer import Visualizer

__all__ = ["FeatureExplorer", "ProposalExplorer", "colorbar_png"]


def colorbar_png(cmap: str, label: str, vmin: float = 0.0, vmax: float = 1.0) -> bytes:
    """A horizontal colour bar (about 260 x 50 px) with its label: the key to a picture whose
    colours encode a value (e.g. the proposals' objectness)."""
    import matplotlib as mpl

    out = PlotImage(1, 1, panel=1.0, title_space=False)
    out.fig.set_size_inches(2.6, 0.55)
    ax = out.axes[0]
    out.fig.subplots_adjust(left=0.05, right=0.95, bottom=0.55, top=0.9)
    mpl.colorbar.ColorbarBase(ax, cmap=mpl.colormaps[cmap], norm=mpl.colors.Normalize(vmin, vmax),
                              orientation="horizontal")
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.set_xlabel(label, fontsize=7, labelpad=1)
    return out.to_png_bytes()


def _cell_slider(description: str, size: int):
    w = _widgets()
    return w.IntSlider(value=-1, min=-1, max=max(size - 1, 0), description=description)


def _fit_cell_sliders(y_slider, x_slider, grid: Tuple[int, int]) -> None:
    """Cell sliders' ranges follow a level's grid (values clamped into it)."""
    for s, n in ((y_slider, grid[0]), (x_slider, grid[1])):
        top = max(int(n) - 1, 0)
        if s.value > top:
            s.value = top
        s.max = top


class FeatureExplorer(Explorer):
    """Backbone maps: one level (a channel, or a reduction), all levels, a channel montage,
    PCA to RGB, activation histograms, or the ROIs each level received.

    Controls: ``image``, ``source`` ("features" or "bottom_up"), ``level``, ``channel`` (-1:
    ``reduce`` over channels), ``reduce``, ``view`` ("level", "levels", "montage", "pca",
    "histograms", "rois"), ``cell_y`` / ``cell_x`` (a cell of the level, -1: none; their ranges
    follow the level's size). A click on the map of the "level" or "pca" view picks the cell
    under it: it is outlined and its channel vector drawn beside (``vector``).
    """

    VIEWS = ("level", "levels", "montage", "pca", "histograms", "rois")
    CLICKABLE_VIEWS = ("level", "pca")

    def __init__(self, trace, model=None, *, image_control=None, zoom: int = 1):
        super().__init__(zoom=zoom)
        w = _widgets()
        self.trace, self.model = trace, model
        sources = ["features"] + (["bottom_up"] if trace.backbone.bottom_up else [])
        names = list(trace.backbone.features)
        max_c = max(int(f.shape[1]) for f in trace.backbone.features.values())
        views = [v for v in self.VIEWS if v != "rois" or trace.box is not None]
        hi, wi = self.grid(names[0], "features")
        if image_control is not None:
            self.shared.add("image")
        self.controls = {
            "image": image_control or image_slider(trace),
            "source": w.Dropdown(options=sources, value="features", description="source"),
            "level": w.Dropdown(options=names, value=names[0], description="level"),
            "channel": w.IntSlider(value=-1, min=-1, max=max_c - 1, description="channel"),
            "reduce": w.Dropdown(options=["mean", "absmean", "max", "norm"], value="mean", description="reduce"),
            "view": w.Dropdown(options=views, value="level", description="view"),
            "cell_y": _cell_slider("cell y", hi),
            "cell_x": _cell_slider("cell x", wi),
        }
        self.vector = w.Image(format="png", layout=w.Layout(max_width="none", display="none"))
        self.controls["source"].observe(self._source_changed, names="value")
        self.controls["level"].observe(self._level_changed, names="value")
        self._watch()
        self._enable_clicks()
        self.redraw()

    def maps(self) -> Dict[str, Any]:
        src = self.controls["source"].value
        return self.trace.backbone.features if src == "features" else self.trace.backbone.bottom_up

    def grid(self, level: str, source: Optional[str] = None) -> Tuple[int, int]:
        maps = self.trace.backbone.features if (source or self.controls["source"].value) == "features" \
            else self.trace.backbone.bottom_up
        f = maps[level]
        return int(f.shape[-2]), int(f.shape[-1])

    def _source_changed(self, change) -> None:
        """Another source: its levels (the current one kept if it has it), its channel count and
        grid; the source's own change redraws once."""
        maps = self.maps()
        names = list(maps)
        with self.quietly():
            lvl = self.controls["level"]
            keep = lvl.value if lvl.value in names else names[0]
            if list(lvl.options) != names:
                lvl.options = names
            lvl.value = keep
            ch = self.controls["channel"]
            top = max(int(f.shape[1]) for f in maps.values()) - 1
            if ch.value > top:
                ch.value = top
            ch.max = top
            self._level_changed()

    def _level_changed(self, _change=None) -> None:
        with self.quietly():  # the level's own change redraws once
            _fit_cell_sliders(self.controls["cell_y"], self.controls["cell_x"], self.grid(self.controls["level"].value))

    def render(self):
        s = self.state
        feats, i = self.maps(), int(s["image"])
        level = s["level"] if s["level"] in feats else list(feats)[0]
        f = feats[level][i]  # (C, Hi, Wi)
        ch = None if s["channel"] < 0 else min(int(s["channel"]), int(f.shape[0]) - 1)
        view = s["view"]
        if view == "level":
            out = level_grid(feats, image=i, channel=ch, reduce=s["reduce"], levels=[level], ncols=1)
        elif view == "levels":
            out = level_grid(feats, image=i, channel=ch, reduce=s["reduce"])
        elif view == "montage":
            start = 0 if ch is None else ch
            out = channel_montage(f, list(range(start, min(start + 32, f.shape[0]))))
        elif view == "pca":
            out = pca_image(feats, image=i, levels=[level], ncols=1)
        elif view == "histograms":
            out = activation_histograms({k: v[i] for k, v in feats.items()})
        else:
            out = rois_per_level(self.trace, self.model, image=i)
        out.drawn["level"], out.drawn["channel"] = level, ch
        out.drawn["cell"] = None
        y, x = int(s["cell_y"]), int(s["cell_x"])
        if view in self.CLICKABLE_VIEWS and y >= 0 and x >= 0:
            from matplotlib.patches import Rectangle

            from .features import channel_vector_plot, feature_vector

            out.axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
            vec = feature_vector(feats, i, level, y, x)
            out.drawn["cell"], out.drawn["vector"] = (level, y, x), vec
            self.vector.value = channel_vector_plot(vec, title=f"{level} cell (y={y}, x={x}): "
                                                    f"{len(vec)} channels").to_png_bytes()
            self.vector.layout.display = None
        else:
            self.vector.layout.display = "none"
        return out

    def pick(self, x: float, y: float) -> Optional[Tuple[str, int, int]]:
        """The cell of the shown level under pixel (x, y) of the picture (views "level" and
        "pca"); it becomes ``cell_y`` / ``cell_x``. Returns (level, y, x), or None off the map."""
        s = self.state
        if s["view"] not in self.CLICKABLE_VIEWS:
            return None
        out = self.last
        _, height = out.canvas.get_width_height()
        col, row = out.axes[0].transData.inverted().transform([[x, height - y]])[0]
        r, c = int(np.floor(row + 0.5)), int(np.floor(col + 0.5))
        hi, wi = self.grid(s["level"])
        if not (0 <= r < hi and 0 <= c < wi):
            return None
        self.set(cell_y=r, cell_x=c)
        return s["level"], r, c

    @property
    def widget(self):
        return self.framed(self.vector)


class ProposalExplorer(Explorer):
    """The RPN's proposals coloured by objectness (top-k), and the anchors of one cell.

    Controls: ``image``, ``topk``, ``show_anchors``, ``level`` (anchor level), ``cell_y``,
    ``cell_x`` (ranges follow the level's grid). A click on the picture picks the cell of the
    chosen level whose anchors are centred nearest the click, and shows its anchors.
    """

    def __init__(self, trace, *, input_format: Optional[str] = None, model=None, image_control=None,
                 zoom: int = 1):
        super().__init__(zoom=zoom)
        if trace.rpn is None:
            raise ValueError("ProposalExplorer needs a trace with an RPN stage.")
        w = _widgets()
        self.trace = trace
        self.input_format = resolve_input_format(trace, model, input_format)
        rpn = trace.rpn
        self.levels = list(rpn.in_features)
        most = max(len(p) for p in rpn.proposals)
        hi, wi = self.grid(self.levels[0])
        if image_control is not None:
            self.shared.add("image")
        self.controls = {
            "image": image_control or image_slider(trace),
            "topk": w.IntSlider(value=min(50, most), min=0, max=most, description="top-k"),
            "show_anchors": w.Checkbox(value=False, description="anchors", indent=False),
            "level": w.Dropdown(options=self.levels, value=self.levels[0], description="level"),
            "cell_y": w.IntSlider(value=hi // 2, min=0, max=hi - 1, description="cell y"),
            "cell_x": w.IntSlider(value=wi // 2, min=0, max=wi - 1, description="cell x"),
        }
        self.legend = w.Image(value=colorbar_png("viridis", "objectness, sigmoid(logit)"), format="png",
                              layout=w.Layout(max_width="none"))
        self.controls["level"].observe(self._level_changed, names="value")
        self._images: Dict[int, np.ndarray] = {}
        self._watch()
        self._enable_clicks()
        self.redraw()

    def grid(self, level: str) -> Tuple[int, int]:
        f = self.trace.backbone.features[level]
        return int(f.shape[-2]), int(f.shape[-1])

    def _level_changed(self, _change=None) -> None:
        with self.quietly():  # the level's own change redraws once
            _fit_cell_sliders(self.controls["cell_y"], self.controls["cell_x"], self.grid(self.controls["level"].value))

    def _box_scale(self, i: int) -> Tuple[float, float]:
        sx, sy = self.trace.preprocess.scales[i]  # input pixels per original pixel
        return sx, sy

    def render(self):
        s = self.state
        i = int(s["image"])
        if i not in self._images:
            self._images[i] = trace_image(self.trace, i, input_format=self.input_format)
        sx, sy = self._box_scale(i)
        box_scale = 1.0 / ((sx + sy) / 2)  # input pixels -> original pixels
        vis = Visualizer(self._images[i])
        out = vis.draw_proposals(self.trace.rpn.proposals[i], topk=s["topk"], box_scale=box_scale)
        n_prop = len(out.drawn["boxes"])
        if s["show_anchors"]:
            lvl = self.levels.index(s["level"])
            hi, wi = self.grid(s["level"])
            y, x = min(s["cell_y"], hi - 1), min(s["cell_x"], wi - 1)
            vis.draw_anchors(self.trace.rpn.anchors[lvl], (hi, wi), (y, x), box_scale=box_scale)
            out.drawn["anchors"] = out.drawn["boxes"][n_prop:]
            out.drawn["cell"] = (s["level"], y, x)
        out.drawn["proposals"] = out.drawn["boxes"][:n_prop]
        return out

    def pick(self, x: float, y: float) -> Tuple[str, int, int]:
        """The cell of the chosen level whose anchors' centre is nearest (x, y) (original-image
        pixels, as drawn); shows its anchors. Returns (level, y, x)."""
        s = self.state
        level = s["level"]
        sx, sy = self._box_scale(int(s["image"]))
        box_scale = 1.0 / ((sx + sy) / 2)  # as drawn: input pixels -> original pixels
        hi, wi = self.grid(level)
        anchors = self.trace.rpn.anchors[self.levels.index(level)].tensor.detach().cpu().numpy()
        a = anchors.reshape(hi * wi, -1, anchors.shape[-1])[:, 0]  # the first anchor of each cell
        centre = ((a[:, :2] + a[:, 2:4]) / 2 if a.shape[1] == 4 else a[:, :2]) * box_scale
        d = np.hypot(centre[:, 0] - x, centre[:, 1] - y)
        cell = int(np.argmin(d))
        r, c = divmod(cell, wi)
        self.set(cell_y=r, cell_x=c, show_anchors=True)
        return level, r, c

    @property
    def widget(self):
        return self.framed(self.legend)
