"""Anchor generators: the reference boxes that dense heads (RPN, RetinaNet) predict offsets from.

Shape legend:
    L:      number of feature maps (levels) anchors are generated on.
    A:      number of cell anchors per spatial location of one level (sizes x aspect ratios).
    Hi, Wi: height and width of the i-th feature map.

Anchors are XYXY boxes in absolute pixels of the (padded) input image. The anchors of level i
are ordered location-major, cell-anchor-minor: row ``(y * Wi + x) * A + a`` is cell anchor ``a``
shifted to grid location ``(y, x)``. Heads flatten their predictions to the same order
(``(N, A, Hi, Wi) -> (N, Hi*Wi*A)``), so the two line up without any index bookkeeping.
Semantics follow detectron2 0.6 (``detectron2/modeling/anchor_generator.py``).
"""

from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from workbench.config import configurable
from workbench.layers import ShapeSpec
from workbench.structures import Boxes, RotatedBoxes
from workbench.utils.registry import Registry

__all__ = [
    "ANCHOR_GENERATOR_REGISTRY",
    "BufferList",
    "DefaultAnchorGenerator",
    "RotatedAnchorGenerator",
    "build_anchor_generator",
]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Registry of modules that create anchors for a list of feature maps.

Entries are called as ``obj(cfg, input_shape)`` with ``input_shape`` a list of ``ShapeSpec``
(one per level, only ``stride`` is read by the default generator) and return an ``nn.Module``
whose ``forward(features: list[Tensor])`` returns one ``Boxes`` per level.
"""


class BufferList(nn.Module):
    """A list of tensors held as buffers, so that ``.to(device)`` moves them with the module.

    The buffers are registered as non-persistent: anchors are recomputed from the config, so they
    are not part of ``state_dict()`` and checkpoints never carry (or expect) them.
    """

    def __init__(self, buffers: Optional[Sequence[torch.Tensor]] = None) -> None:
        super().__init__()
        if buffers is not None:
            self.extend(buffers)

    def extend(self, buffers: Sequence[torch.Tensor]) -> "BufferList":
        offset = len(self)
        for i, buffer in enumerate(buffers):
            self.register_buffer(str(offset + i), buffer, persistent=False)
        return self

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._buffers.values())

    def __getitem__(self, index: int) -> torch.Tensor:
        return list(self._buffers.values())[index]


def _create_grid_offsets(size: Sequence[int], stride: int, offset: float,
                         device: torch.device) -> tuple:
    """Centres of the anchors of one level, as two flat vectors (shift_x, shift_y) of Hi*Wi.

    Locations are enumerated row by row (y outer, x inner), matching the (Hi, Wi) memory order
    of a feature map. The first centre sits at ``offset * stride`` pixels from the image corner.
    """
    grid_height, grid_width = int(size[0]), int(size[1])
    shifts_x = torch.arange(offset * stride, grid_width * stride, step=stride,
                            dtype=torch.float32, device=device)
    shifts_y = torch.arange(offset * stride, grid_height * stride, step=stride,
                            dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # each (Hi, Wi)
    return shift_x.reshape(-1), shift_y.reshape(-1)  # (Hi, Wi) -> (Hi*Wi,)


def _broadcast_params(params: Union[Sequence[float], Sequence[Sequence[float]]],
                      num_features: int, name: str) -> List[List[float]]:
    """Expand ``sizes`` / ``aspect_ratios`` to one list per feature map.

    ``[32, 64]`` (a flat list) and ``[[32, 64]]`` (a single nested list) are both used for every
    level; otherwise one nested list per level is required.
    """
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"Anchor generator {name} must be a list, got {params!r}.")
    if len(params) == 0:
        raise ValueError(f"Anchor generator {name} must not be empty.")
    if not isinstance(params[0], (list, tuple)):  # list[float]: the same for every level
        return [list(params)] * num_features
    if len(params) == 1:
        return [list(params[0])] * num_features
    if len(params) != num_features:
        raise ValueError(
            f"Anchor generator got {name} for {len(params)} levels, but there are "
            f"{num_features} input features (strides)."
        )
    return [list(p) for p in params]


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(nn.Module):
    """Axis-aligned anchors of several sizes and aspect ratios at every feature map location.

    The anchors of "Faster R-CNN" (Ren et al. 2015), defined as detectron2 does rather than as
    the original Detectron: each cell anchor is centred exactly on its grid point and has exactly
    the requested area, with no rounding to integer sizes.
    """

    box_dim: int = 4
    """Number of coordinates of one anchor box."""
    box_type = Boxes
    """The structure ``forward`` returns the anchors of a level in."""

    @configurable
    def __init__(self, *, sizes: Union[Sequence[float], Sequence[Sequence[float]]],
                 aspect_ratios: Union[Sequence[float], Sequence[Sequence[float]]],
                 strides: Sequence[int], offset: float = 0.5) -> None:
        """
        Args:
            sizes: anchor sizes (square root of the anchor area, in input-image pixels), either
                one list per level or a single list used for every level.
            aspect_ratios: anchor height / width ratios; same broadcasting rule as ``sizes``.
            strides: stride (in input pixels) of each feature map; its length is L.
            offset: position of the first anchor centre, as a fraction of the stride, relative
                to the image's top-left corner; in [0, 1). 0.5 centres anchors on the pixels of
                the stride grid; detectron2's FPN configs use 0.0.
        """
        super().__init__()
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"Anchor offset must be in [0, 1), got {offset}.")
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "sizes")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        self.cell_anchors = self._calculate_anchors(sizes, aspect_ratios)
        self.offset = offset

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> dict:
        return {
            "sizes": cfg.MODEL.ANCHOR_GENERATOR.SIZES,
            "aspect_ratios": cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            "strides": [x.stride for x in input_shape],
            "offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        }

    def _calculate_anchors(self, sizes: List[List[float]],
                           aspect_ratios: List[List[float]]) -> BufferList:
        cell_anchors = [
            self.generate_cell_anchors(s, a).float() for s, a in zip(sizes, aspect_ratios)
        ]
        return BufferList(cell_anchors)

    @property
    def num_anchors(self) -> List[int]:
        """A for each level: how many anchors sit at every location of that feature map.

        Standard RPN and RetinaNet heads share weights across levels and need the same A on
        every level (e.g. 3 aspect ratios x 1 size per level = 3 in the FPN configs).
        """
        return [len(cell_anchors) for cell_anchors in self.cell_anchors]

    @property
    def num_cell_anchors(self) -> List[int]:
        """Alias of :attr:`num_anchors` (detectron2 keeps both names)."""
        return self.num_anchors

    def _grid_anchors(self, grid_sizes: Sequence[Sequence[int]],
                      device: Optional[torch.device] = None) -> List[torch.Tensor]:
        """Tile the cell anchors of every level over its (Hi, Wi) grid.

        Args:
            grid_sizes: (Hi, Wi) of each level.
            device: where to create the anchors; defaults to the device of the cell anchors.

        Returns:
            L tensors, the i-th of shape (Hi*Wi*A, B), XYXY (B = 4) absolute pixels.
        """
        anchors = []
        for size, stride, base_anchors in zip(grid_sizes, self.strides, self.cell_anchors):
            if device is not None:
                base_anchors = base_anchors.to(device)
            shift_x, shift_y = _create_grid_offsets(size, stride, self.offset,
                                                    base_anchors.device)
            shifts = self._location_shifts(shift_x, shift_y)  # (Hi*Wi, B)
            B = self.box_dim
            # (Hi*Wi, 1, B) + (1, A, B) -> (Hi*Wi, A, B) -> (Hi*Wi*A, B)
            anchors.append((shifts.view(-1, 1, B) + base_anchors.view(1, -1, B)).reshape(-1, B))
        return anchors

    def _location_shifts(self, shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
        """(Hi*Wi, B): what moves a cell anchor to each location (both corners move)."""
        return torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)

    def generate_cell_anchors(self, sizes: Sequence[float] = (32, 64, 128, 256, 512),
                              aspect_ratios: Sequence[float] = (0.5, 1, 2)) -> torch.Tensor:
        """The anchors of one location, centred at (0, 0).

        For a size s and ratio r = h / w: w * h = s^2 gives w = sqrt(s^2 / r), h = r * w.

        Returns:
            Tensor of shape (len(sizes) * len(aspect_ratios), 4), XYXY, ordered size-major:
            all ratios of the first size, then all ratios of the second size, and so on.
            Built from Python floats (float64 arithmetic) then stored with torch's default
            dtype, as detectron2 does.
        """
        anchors = []
        for size in sizes:
            area = size ** 2.0
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors)

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        """
        Args:
            features: L feature maps, each (N, C, Hi, Wi); only their spatial shape (and device)
                is used.

        Returns:
            L ``Boxes``, the i-th holding Hi*Wi*A anchors (the same for every image). They are
            created on the device of the features.
        """
        if len(features) != self.num_features:
            raise ValueError(
                f"Anchor generator was built for {self.num_features} feature maps "
                f"(strides {self.strides}), got {len(features)}."
            )
        grid_sizes = [feature_map.shape[-2:] for feature_map in features]
        device = features[0].device if len(features) > 0 else None
        anchors_over_all_feature_maps = self._grid_anchors(grid_sizes, device=device)
        return [self.box_type(x) for x in anchors_over_all_feature_maps]


@ANCHOR_GENERATOR_REGISTRY.register()
class RotatedAnchorGenerator(DefaultAnchorGenerator):
    """Rotated anchors of several sizes, aspect ratios and angles at every location (RRPN, Ma et
    al. 2018, "Arbitrary-Oriented Scene Text Detection via Rotation Proposals").

    Anchors are (Hi*Wi*A, 5) rows (xc, yc, w, h, angle in degrees ccw), ordered like
    :class:`DefaultAnchorGenerator`'s (location-major); the A cell anchors of a location are
    ordered size-major, then aspect ratio, then angle.
    """

    box_dim: int = 5
    box_type = RotatedBoxes

    @configurable
    def __init__(self, *, sizes: Union[Sequence[float], Sequence[Sequence[float]]],
                 aspect_ratios: Union[Sequence[float], Sequence[Sequence[float]]],
                 strides: Sequence[int],
                 angles: Union[Sequence[float], Sequence[Sequence[float]]],
                 offset: float = 0.5) -> None:
        """
        Args:
            sizes, aspect_ratios, strides, offset: as for :class:`DefaultAnchorGenerator`.
            angles: anchor angles in degrees counter-clockwise; one list per level or a single
                list for every level (the broadcasting rule of ``sizes``).
        """
        super().__init__(sizes=sizes, aspect_ratios=aspect_ratios, strides=strides, offset=offset)
        sizes = _broadcast_params(sizes, self.num_features, "sizes")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        angles = _broadcast_params(angles, self.num_features, "angles")
        self.cell_anchors = BufferList([  # the upright parent's cell anchors, with angles
            self.generate_cell_anchors(s, a, t).float()
            for s, a, t in zip(sizes, aspect_ratios, angles)
        ])

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> dict:
        return {**super().from_config(cfg, input_shape),
                "angles": cfg.MODEL.ANCHOR_GENERATOR.ANGLES}

    def _location_shifts(self, shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
        """(Hi*Wi, 5): only the centre moves."""
        zeros = torch.zeros_like(shift_x)
        return torch.stack((shift_x, shift_y, zeros, zeros, zeros), dim=1)

    def generate_cell_anchors(self, sizes: Sequence[float] = (32, 64, 128, 256, 512),
                              aspect_ratios: Sequence[float] = (0.5, 1, 2),
                              angles: Sequence[float] = (-90, -60, -30, 0, 30, 60, 90)
                              ) -> torch.Tensor:
        """The anchors of one location, centred at (0, 0): (sizes * ratios * angles, 5) rows
        (0, 0, w, h, angle) with w * h = size^2 and h / w = ratio."""
        anchors = []
        for size in sizes:
            area = size ** 2.0
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.extend([0, 0, w, h, a] for a in angles)
        return torch.tensor(anchors)


def build_anchor_generator(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Build the anchor generator named by ``cfg.MODEL.ANCHOR_GENERATOR.NAME``."""
    anchor_generator = cfg.MODEL.ANCHOR_GENERATOR.NAME
    return ANCHOR_GENERATOR_REGISTRY.get(anchor_generator)(cfg, input_shape)
