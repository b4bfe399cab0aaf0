"""What every explorer shares: named controls, one redraw per action, a picture shown at its
native pixel size, and clicks on it.

* **Controls.** ``explorer.controls`` maps a name to an ipywidgets control; ``set(**values)``
  changes several at once and redraws once. Values are checked and snapped to the control's step
  *before* they are sent: a slider of step 0.01 given 0.333 holds 0.33 at once, so the browser
  has nothing to correct and nothing is echoed back to the kernel (an echo would land after
  later cells of a "Run all" and overwrite what they set). A value outside a slider's range or
  not among a dropdown's options is an error naming the control and what it accepts.
* **One redraw per action.** Changes made inside ``hold()`` (and ``set``) redraw once at the
  end. An explorer that is not on screen (a hidden tab of :class:`TraceExplorer`) only marks
  itself stale and redraws when it is shown, or when ``last`` / ``png`` is read.
* **Native size.** The PNG is shown at its own pixel size times an integer ``zoom`` (a view
  control: changing it never redraws), with ``image-rendering: pixelated``; never stretched to
  the output's width.
* **Clicks.** A click on the picture arrives through `ipyevents
  <https://github.com/mwcraig/ipyevents>`_, which reports the clicked pixel in the PNG's own
  coordinates whatever the zoom (its ``dataX`` / ``dataY``), and is handed to :meth:`click`;
  subclasses say what a click picks in :meth:`pick`. ipyevents was chosen over an ``anywidget``
  component because it needs no JavaScript of ours: a maintained, pure-Python package with a
  prebuilt JupyterLab extension. Headless code calls ``explorer.click(x, y)`` directly.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import struct
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

__all__ = ["Explorer", "png_size", "snap_to_control"]

ZOOMS = (1, 2, 3, 4)
# The picture's pixels as they are: no smoothing when zoomed, no shrinking to the output width.
NATIVE_CSS = ("<style>.wb-native{image-rendering:pixelated;max-width:none!important;"
              "flex:0 0 auto!important}</style>")


def _widgets():
    import ipywidgets

    return ipywidgets


def png_size(data: bytes) -> Tuple[int, int]:
    """(width, height) of PNG bytes, from the IHDR chunk."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("Expected PNG bytes (they start with the PNG signature).")
    return struct.unpack(">II", data[16:24])


def _decimals(step: float) -> int:
    mantissa, _, exponent = repr(float(step)).partition("e")
    digits = len(mantissa.split(".")[1].rstrip("0")) if "." in mantissa else 0
    return max(digits - int(exponent or 0), 0)


def snap_to_control(name: str, control, value):
    """``value`` as ``control`` will hold it: a slider's value on its step and within its range,
    a dropdown's among its options; anything else is an error naming ``name``."""
    w = _widgets()
    if isinstance(control, (w.IntSlider, w.FloatSlider, w.BoundedIntText, w.BoundedFloatText)):
        lo, hi = control.min, control.max
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise TypeError(f"Control {name!r} takes a number in [{lo}, {hi}]; got {value!r}.")
        step = getattr(control, "step", None) or 0
        tol = step * 1e-6 if step else 1e-12
        if value < lo - tol or value > hi + tol:
            raise ValueError(f"Control {name!r} takes a value in [{lo}, {hi}]; got {value!r}.")
        if step:
            k = round((float(value) - lo) / step)
            value = min(max(lo + k * step, lo), hi)
        if isinstance(control, (w.IntSlider, w.BoundedIntText)):
            return int(round(value))
        return round(float(value), _decimals(step) if step else 12)
    if isinstance(control, w.SelectMultiple):
        values = [v for _, v in _option_pairs(control)]
        if value is None:
            value = ()
        elif hasattr(value, "tolist") and not isinstance(value, str):  # numpy / torch
            value = value.tolist()
        value = tuple(value) if isinstance(value, (list, tuple, set)) else (value,)
        bad = [v for v in value if v not in values]
        if bad:
            raise ValueError(f"Control {name!r} has no option(s) {bad}; it offers {_describe(control)}.")
        return value
    if isinstance(control, (w.Dropdown, w.Select, w.ToggleButtons, w.RadioButtons)):
        values = [v for _, v in _option_pairs(control)]
        if value not in values:
            raise ValueError(f"Control {name!r} has no option {value!r}; it offers {_describe(control)}.")
        return value
    if isinstance(control, w.Checkbox):
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise TypeError(f"Control {name!r} takes True or False; got {value!r}.")
    return value


def _option_pairs(control) -> List[Tuple[str, Any]]:
    return [o if isinstance(o, tuple) and len(o) == 2 else (str(o), o) for o in control.options]


def _describe(control, limit: int = 12) -> str:
    pairs = _option_pairs(control)
    shown = ", ".join(f"{v!r}" + (f" ({label})" if label != str(v) else "") for label, v in pairs[:limit])
    return f"[{shown}{', ...' if len(pairs) > limit else ''}]"


class Explorer:
    """Base: named controls, a picture, ``set(**values)``, ``state`` and clicks.

    Subclasses fill ``self.controls`` (name -> widget) and implement :meth:`render` (and
    :meth:`pick` for clicks). ``view_controls`` hold display-only settings (``zoom``): they
    never cause a redraw. ``shared`` names controls owned by a container (the image selector of
    :class:`TraceExplorer`), which this explorer's own widget leaves out.
    """

    def __init__(self, *, zoom: int = 1):
        w = _widgets()
        if zoom not in ZOOMS:
            raise ValueError(f"zoom must be one of {ZOOMS}; got {zoom!r}.")
        self.image = w.Image(format="png", layout=w.Layout(max_width="none", flex="0 0 auto"))
        self.image.add_class("wb-native")
        self.view_controls: Dict[str, Any] = {
            "zoom": w.Dropdown(options=[(f"{z}x", z) for z in ZOOMS], value=zoom, description="zoom",
                               layout=w.Layout(width="140px"))}
        self.view_controls["zoom"].observe(lambda _c: self._fit_image(), names="value")
        self.controls: Dict[str, Any] = {}
        self.shared: set = set()
        self.active = True  # on screen: redraw on change; else only mark stale
        self.renders = 0
        self._last = None
        self._png = b""
        self._stale = False
        self._holding = 0
        self._pending = False
        self._rendering = False
        self._quiet = 0
        self._after_render: List[Callable[["Explorer"], None]] = []
        self._listeners: List[Callable[["Explorer"], None]] = []
        self._events = None

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> Dict[str, Any]:
        """Current control values by name (view controls included)."""
        both = {**self.controls, **self.view_controls}
        return {k: (list(v.value) if isinstance(v.value, tuple) else v.value) for k, v in both.items()}

    @contextlib.contextmanager
    def hold(self):
        """Change several controls and redraw once at the end."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if self._holding == 0 and self._pending:
                self._pending = False
                self._changed()

    @contextlib.contextmanager
    def quietly(self):
        """Change dependent controls (an option list, a clamped range) without each change
        counting as an action: the change that caused them redraws once."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def set(self, **values) -> "Explorer":
        """Set controls by name (as moving the widgets would) and redraw once. Slider values are
        snapped to the slider's step first (what the widget will hold); a value out of range or
        not among the options raises. Values are set in the order given, and a control whose
        options depend on others (a detection of the image) is checked against the options the
        earlier values give."""
        both = {**self.controls, **self.view_controls}
        unknown = sorted(set(values) - set(both))
        if unknown:
            raise KeyError(f"Unknown control(s) {unknown}; this explorer has {sorted(both)}.")
        with self.hold():
            for k, v in values.items():
                self.refresh_options(k)
                both[k].value = snap_to_control(k, both[k], v)
        return self

    def refresh_options(self, name: str) -> None:
        """Bring control ``name``'s options up to date with the others (quietly); the base
        explorer has no dependent options."""

    def set_options(self, name: str, options, value) -> bool:
        """Give control ``name`` these (label, value) options and this value, quietly (a
        dependent change, not an action); the option list is reassigned only when it differs,
        since ipywidgets resets the value on every reassignment. Returns whether anything
        changed."""
        control = self.controls[name]
        options = [tuple(o) for o in options]
        same_options = [tuple(o) for o in control.options] == options
        changed = not same_options or control.value != value
        with self.quietly():
            if not same_options:
                control.options = options
            control.value = value
        return changed

    def _watch(self) -> None:
        for w in self.controls.values():
            w.observe(self._on_change, names="value")

    def _on_change(self, _change=None) -> None:
        if self._rendering or self._quiet:  # dependent controls (option lists) being updated
            return
        if self._holding:
            self._pending = True
        else:
            self._changed()

    def _changed(self) -> None:
        """One action's effect: redraw now if on screen, else when shown; then tell the
        listeners (a TraceExplorer keeping its tabs in step) once."""
        if self.active:
            self.redraw()
        else:
            self._stale = True
        for fn in self._listeners:
            fn(self)

    def show(self) -> None:
        """Mark the explorer on screen, redrawing first if a change came while it was hidden."""
        self.active = True
        if self._stale:
            self.redraw()

    # -- drawing -----------------------------------------------------------------------------------

    def render(self):
        raise NotImplementedError

    def redraw(self) -> bytes:
        """Render with the current state and show it; returns the PNG bytes."""
        self._rendering = True
        self._stale = True  # until the render succeeds: a failed one is retried on the next read
        try:
            self._last = self.render()
        finally:
            self._rendering = False
        self._pending = self._stale = False
        self._png = self._last.to_png_bytes()
        self.image.value = self._png
        self._fit_image()
        self.renders += 1
        for fn in self._after_render:
            fn(self)
        return self._png

    @property
    def last(self):
        """The ``VisImage`` / ``PlotImage`` on screen (drawn now if a change is pending)."""
        if self._stale or self._last is None:
            self.redraw()
        return self._last

    @property
    def png(self) -> bytes:
        """The PNG bytes on screen (drawn now if a change is pending)."""
        if self._stale or self._last is None:
            self.redraw()
        return self._png

    @property
    def zoom(self) -> int:
        return int(self.view_controls["zoom"].value)

    def _fit_image(self) -> None:
        """Show the PNG at its pixel size times the zoom: element size == PNG size x zoom."""
        if not self._png:
            return
        wd, ht = png_size(self._png)
        z = self.zoom
        layout = self.image.layout
        layout.width, layout.height = f"{wd * z}px", f"{ht * z}px"
        layout.min_width = layout.width

    # -- clicks ------------------------------------------------------------------------------------

    def _enable_clicks(self) -> None:
        """Route clicks on the picture to :meth:`click` (through ipyevents)."""
        from ipyevents import Event

        self._events = Event(source=self.image, watched_events=["click"], prevent_default_action=True)
        self._events.on_dom_event(self._on_dom_click)

    def _on_dom_click(self, event: Dict[str, Any]) -> None:
        x, y = event.get("dataX"), event.get("dataY")
        if x is None or y is None or not self._png:
            return
        wd, ht = png_size(self._png)  # the browser may report the right / bottom edge itself
        self.click(min(max(float(x), 0.0), wd - 0.5), min(max(float(y), 0.0), ht - 0.5))

    def click(self, x: float, y: float):
        """What a click at pixel (x, y) of the shown PNG does (x right, y down, zoom undone):
        :meth:`pick` says what it selects. Returns what was picked (None: nothing there)."""
        wd, ht = png_size(self.png)  # drawn first if stale: the click is on what is current
        if not (0 <= x < wd and 0 <= y < ht):
            raise ValueError(f"Click at ({x}, {y}) is outside the {wd}x{ht} picture.")
        return self.pick(x, y)

    def pick(self, x: float, y: float):
        """Select what lies under pixel (x, y) of the picture; the base explorer picks nothing."""
        return None

    # -- layout ------------------------------------------------------------------------------------

    CONTROL_WIDTH = "300px"

    def control_panel(self):
        """This explorer's own controls (not the shared ones) and the view controls, one per
        line in a column left of the picture: the picture and its side panel keep the width."""
        w = _widgets()
        own = [c for k, c in self.controls.items() if k not in self.shared] + list(self.view_controls.values())
        for c in own:
            c.layout.width = self.CONTROL_WIDTH
            if hasattr(c, "style") and hasattr(c.style, "description_width"):
                c.style.description_width = "70px"
        return w.VBox(own, layout=w.Layout(flex="0 0 auto", margin="0 12px 0 0"))

    def framed(self, *side):
        """Controls | picture | ``side`` widgets, top-aligned (flex's default "stretch" would
        distort the pictures)."""
        w = _widgets()
        top = w.Layout(align_items="flex-start")
        parts = [self.control_panel(), self.image]
        if side:
            parts.append(w.VBox(list(side), layout=w.Layout(align_items="flex-start", margin="0 0 0 12px")))
        return w.VBox([w.HTML(NATIVE_CSS), w.HBox(parts, layout=top)])

    @property
    def widget(self):
        return self.framed()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
