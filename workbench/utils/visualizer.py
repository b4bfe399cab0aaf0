"""detectron2's path ``detectron2/utils/visualizer.py``: re-exports of :mod:`workbench.vis`.

The implementation is :mod:`workbench.vis.visualizer` (``Visualizer``, ``VisImage``) and
:mod:`workbench.vis.masks` (``ColorMode``); ``random_color`` is :mod:`workbench.utils.colormap`'s.
detectron2's ``GenericMask`` has no workbench counterpart (masks are converted inside
``Visualizer``).
"""

from workbench.utils.colormap import random_color
from workbench.vis.visualizer import ColorMode, VisImage, Visualizer

__all__ = ["ColorMode", "VisImage", "Visualizer", "random_color"]
