"""Instance masks in three forms: full-image bitmaps, COCO polygons, and per-ROI soft masks.

Shape legend:
    N: number of instances.
    H, W: image height and width in pixels.
    M: side of a square mask defined inside a box (``mask_size`` / ROI mask resolution).
    P: number of polygons of one instance; each polygon is a flat float64 array
       [x0, y0, x1, y1, ...] of 2 * (>= 3) image coordinates.

Pixel convention (as in detectron2 and the COCO API): pixel (row i, column j) covers the unit
square x in [j, j + 1), y in [i, i + 1), and its centre is (j + 0.5, i + 0.5).

Semantics follow detectron2 0.6 (``detectron2/structures/masks.py``). Mask R-CNN training
targets come from :meth:`BitMasks.crop_and_resize` / :meth:`PolygonMasks.crop_and_resize`,
which reproduce detectron2 bit for bit.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Iterator, List, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from torchvision.ops import roi_align

from .boxes import Boxes
from .mask_ops import paste_masks_in_image

__all__ = [
    "polygon_area",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
    "BitMasks",
    "PolygonMasks",
    "ROIMasks",
]


def _boxes_tensor(boxes: Union[Boxes, torch.Tensor]) -> torch.Tensor:
    tensor = boxes.tensor if isinstance(boxes, Boxes) else boxes
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or tensor.shape[1] != 4:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"Expected boxes of shape (N, 4), got {shape}")
    return tensor


def polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area enclosed by one polygon (shoelace formula), whatever its orientation.

    Args:
        x: vertex x coordinates, (V,).
        y: vertex y coordinates, (V,).
    """
    return 0.5 * np.abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def polygons_to_bitmask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise the polygons of one instance with the COCO API.

    The polygons are merged as a union (``mask_util.merge`` without intersection), so a
    polygon drawn inside another does *not* cut a hole: COCO polygons cannot express holes.

    Args:
        polygons: P flat arrays [x0, y0, x1, y1, ...] in pixels.
        height: output height.
        width: output width.

    Returns:
        (height, width) bool array; all False when ``polygons`` is empty.
    """
    if len(polygons) == 0:
        # The COCO API does not accept an empty polygon list.
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects(polygons, height, width)
    rle = mask_util.merge(rles)
    return mask_util.decode(rle).astype(bool)


def rasterize_polygons_within_box(
    polygons: List[np.ndarray], box: np.ndarray, mask_size: int
) -> torch.Tensor:
    """Rasterise one instance's polygons into an M x M grid laid over ``box``.

    The polygons are shifted so the box corner is the origin and scaled by
    ``mask_size / max(side, 0.1)`` per axis (the 0.1 floor avoids dividing by a degenerate
    box side), then drawn with the COCO API. Produces Mask R-CNN mask targets.

    Args:
        polygons: P flat float64 arrays of image coordinates; not modified.
        box: (4,) float32 array, XYXY.
        mask_size: M.

    Returns:
        (M, M) bool tensor on the CPU.
    """
    # Arithmetic mirrors detectron2 under NumPy 2 (the reference ran NumPy 2.4): the box is a
    # float32 array, so its sides are float32 differences and `mask_size / side` is a float32
    # division; the float64 polygons are then shifted by the (exactly widened) float32 corner
    # and multiplied by the widened float32 ratio. Computing the ratio in float64 instead would
    # move vertices by ~1e-6 px, enough to flip boundary pixels of the COCO rasteriser, whose
    # grid is 1/5 px.
    box = np.asarray(box, dtype=np.float32)
    w = box[2] - box[0]  # np.float32
    h = box[3] - box[1]  # np.float32
    min_side = np.float32(0.1)  # max(side, 0.1) compares in float32 under NumPy 2

    polygons = copy.deepcopy(polygons)
    for p in polygons:
        p[0::2] = p[0::2] - float(box[0])
        p[1::2] = p[1::2] - float(box[1])

    # max() keeps degenerate boxes from dividing by ~0; the 0.1 branch is a Python float.
    ratio_h = float(np.float32(mask_size) / h) if not h < min_side else mask_size / 0.1
    ratio_w = float(np.float32(mask_size) / w) if not w < min_side else mask_size / 0.1
    for p in polygons:
        p[0::2] *= ratio_w
        p[1::2] *= ratio_h

    mask = polygons_to_bitmask(polygons, mask_size, mask_size)
    return torch.from_numpy(mask)


class BitMasks:
    """One full-image boolean bitmap per instance.

    Attributes:
        tensor: (N, H, W) bool.
        image_size: (H, W), a ``torch.Size``.
    """

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray]):
        """
        Args:
            tensor: (N, H, W) masks of any dtype; nonzero means foreground. A tensor keeps its
                device.

        Raises:
            ValueError: if the input is not 3-D.
        """
        if isinstance(tensor, torch.Tensor):
            t = tensor.to(torch.bool)
        else:
            t = torch.as_tensor(tensor, dtype=torch.bool)
        if t.dim() != 3:
            raise ValueError(f"Expected bit masks of shape (N, H, W), got {tuple(t.shape)}")
        self.image_size = t.shape[1:]
        self.tensor = t

    def to(self, *args: Any, **kwargs: Any) -> "BitMasks":
        return BitMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "BitMasks":
        """Select masks: an int gives a ``BitMasks`` of one mask; also slices, bool masks and
        integer indices. The result may share storage with this object.

        Raises:
            IndexError: if the result is not (n, H, W).
        """
        if isinstance(item, (int, np.integer)):
            return BitMasks(self.tensor[item].unsqueeze(0))  # (H, W) -> (1, H, W)
        m = self.tensor[item]
        if m.dim() != 3:
            raise IndexError(
                f"Indexing BitMasks with {item!r} gave a tensor of shape {tuple(m.shape)}, "
                "expected (n, H, W)"
            )
        return BitMasks(m)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each mask as an (H, W) bool tensor."""
        yield from self.tensor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_instances={len(self.tensor)})"

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def nonempty(self) -> torch.Tensor:
        """(N,) bool, True where the mask has at least one foreground pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def area(self) -> torch.Tensor:
        """(N,) int64 foreground pixel counts. (Not in detectron2 0.6's BitMasks.)"""
        return self.tensor.flatten(1).sum(dim=1)

    @staticmethod
    def from_polygon_masks(
        polygon_masks: Union["PolygonMasks", List[List[np.ndarray]]], height: int, width: int
    ) -> "BitMasks":
        """Rasterise polygons at image resolution (H, W) = (height, width)."""
        if isinstance(polygon_masks, PolygonMasks):
            polygon_masks = polygon_masks.polygons
        masks = [polygons_to_bitmask(p, height, width) for p in polygon_masks]
        if len(masks) == 0:
            return BitMasks(torch.empty(0, height, width, dtype=torch.bool))
        return BitMasks(torch.stack([torch.from_numpy(x) for x in masks]))

    @staticmethod
    def from_roi_masks(
        roi_masks: "ROIMasks",
        height: int,
        width: int,
        boxes: Union[Boxes, torch.Tensor, None] = None,
        threshold: float = 0.5,
    ) -> "BitMasks":
        """Paste ROI masks into (height, width) images; see :meth:`ROIMasks.to_bitmasks`.

        detectron2 0.6 forwards ``(height, width)`` only, which does not fit
        ``ROIMasks.to_bitmasks(boxes, height, width)`` and fails: an ROI mask alone does not say
        where to paste. Here the boxes are an extra argument, and omitting them raises.

        Raises:
            TypeError: if ``boxes`` is not given.
        """
        if boxes is None:
            raise TypeError(
                "BitMasks.from_roi_masks needs the boxes the ROI masks live in: "
                "BitMasks.from_roi_masks(roi_masks, height, width, boxes=...)"
            )
        return roi_masks.to_bitmasks(boxes, height, width, threshold=threshold)

    def crop_and_resize(self, boxes: Union[Boxes, torch.Tensor], mask_size: int) -> torch.Tensor:
        """Crop mask i to box i and resample it to (M, M), M = ``mask_size``.

        Uses ``torchvision.ops.roi_align`` with ``aligned=True`` (pixel centres at +0.5),
        ``spatial_scale=1``, adaptive sampling (``sampling_ratio=0``), then thresholds the
        averaged coverage at 0.5, exactly as detectron2.

        Args:
            boxes: N boxes, XYXY image pixels, one per mask.
            mask_size: M.

        Returns:
            (N, M, M) bool tensor on the masks' device.
        """
        boxes = _boxes_tensor(boxes)
        if len(boxes) != len(self):
            raise ValueError(f"Got {len(boxes)} boxes for {len(self)} masks")
        device = self.tensor.device

        batch_inds = torch.arange(len(boxes), device=device).to(dtype=boxes.dtype)[:, None]
        # (N, 5) rows (image index, x0, y0, x1, y1): mask i is its own one-image batch
        rois = torch.cat([batch_inds, boxes.to(device=device)], dim=1)
        bit_masks = self.tensor.to(dtype=torch.float32)[:, None, :, :]  # (N, 1, H, W)
        output = roi_align(
            bit_masks,
            rois.to(dtype=bit_masks.dtype),
            (mask_size, mask_size),
            spatial_scale=1.0,
            sampling_ratio=0,
            aligned=True,
        ).squeeze(1)  # (N, 1, M, M) -> (N, M, M)
        return output >= 0.5

    def get_bounding_boxes(self) -> Boxes:
        """Tight boxes around the foreground: (x_min, y_min, x_max + 1, y_max + 1).

        An empty mask gets the all-zero box.
        """
        boxes = torch.zeros(self.tensor.shape[0], 4, dtype=torch.float32, device=self.device)
        x_any = torch.any(self.tensor, dim=1)  # (N, W): columns with foreground
        y_any = torch.any(self.tensor, dim=2)  # (N, H): rows with foreground
        for idx in range(self.tensor.shape[0]):
            x = torch.where(x_any[idx, :])[0]
            y = torch.where(y_any[idx, :])[0]
            if len(x) > 0 and len(y) > 0:
                boxes[idx, :] = torch.stack([x[0], y[0], x[-1] + 1, y[-1] + 1]).to(torch.float32)
        return Boxes(boxes)

    @staticmethod
    def cat(bitmasks_list: Sequence["BitMasks"]) -> "BitMasks":
        """Concatenate along N; all masks must share (H, W).

        Raises:
            ValueError: for an empty list.
            TypeError: for a non-BitMasks element.
        """
        if not isinstance(bitmasks_list, (list, tuple)) or len(bitmasks_list) == 0:
            raise ValueError("BitMasks.cat needs a non-empty list of BitMasks")
        for i, bm in enumerate(bitmasks_list):
            if not isinstance(bm, BitMasks):
                raise TypeError(f"BitMasks.cat: element {i} is a {type(bm).__name__}")
        return type(bitmasks_list[0])(torch.cat([bm.tensor for bm in bitmasks_list], dim=0))


class PolygonMasks:
    """Instance masks as COCO polygons: for each instance, a list of polygons.

    Polygons are float64 NumPy arrays and always stay on the CPU (``to`` is a no-op), since
    they are many small arrays; ``crop_and_resize`` moves its result to the boxes' device.

    Attributes:
        polygons: ``list[list[np.ndarray]]``, N instances x P polygons x flat coordinates.
    """

    def __init__(self, polygons: List[List[Union[torch.Tensor, np.ndarray, List[float]]]]):
        """
        Args:
            polygons: for each instance, a list of polygons, each a flat sequence
                [x0, y0, x1, y1, ...] (tensor, array or list) of at least 3 points.

        Raises:
            ValueError: naming the instance / polygon that is not well formed.
        """
        if not isinstance(polygons, list):
            raise ValueError(
                "Cannot create PolygonMasks: expected a list (instances) of lists (polygons) "
                f"of coordinates, got {type(polygons).__name__}"
            )

        def _make_array(t: Union[torch.Tensor, np.ndarray, List[float]]) -> np.ndarray:
            # float64 for precision; CPU because the COCO API rasterises on the CPU.
            if isinstance(t, torch.Tensor):
                t = t.detach().cpu().numpy()
            return np.asarray(t).astype("float64")

        processed: List[List[np.ndarray]] = []
        for i, per_instance in enumerate(polygons):
            if not isinstance(per_instance, list):
                raise ValueError(
                    f"Cannot create PolygonMasks: instance {i} should be a list of polygons, "
                    f"got {type(per_instance).__name__}"
                )
            arrays = [_make_array(p) for p in per_instance]
            for j, arr in enumerate(arrays):
                if arr.ndim != 1 or len(arr) % 2 != 0 or len(arr) < 6:
                    raise ValueError(
                        f"Cannot create PolygonMasks: polygon {j} of instance {i} has shape "
                        f"{arr.shape}; expected a flat [x0, y0, x1, y1, ...] with an even "
                        "number (>= 6) of coordinates"
                    )
            processed.append(arrays)
        self.polygons: List[List[np.ndarray]] = processed

    def to(self, *args: Any, **kwargs: Any) -> "PolygonMasks":
        """No-op: polygons stay on the CPU."""
        return self

    @property
    def device(self) -> torch.device:
        # Where the data lives, not a choice: polygons are NumPy arrays.
        return torch.device("cpu")

    def get_bounding_boxes(self) -> Boxes:
        """Tight XYXY boxes around each instance's polygons (float32).

        Faithful to detectron2: the running maximum starts at 0, so an instance lying
        entirely at negative coordinates gets x1/y1 = 0, and an instance without polygons
        gets (inf, inf, 0, 0).
        """
        boxes = torch.zeros(len(self.polygons), 4, dtype=torch.float32)
        for idx, per_instance in enumerate(self.polygons):
            minxy = torch.as_tensor([float("inf"), float("inf")], dtype=torch.float32)
            maxxy = torch.zeros(2, dtype=torch.float32)
            for polygon in per_instance:
                coords = torch.from_numpy(polygon).view(-1, 2).to(dtype=torch.float32)  # (V, 2)
                minxy = torch.min(minxy, torch.min(coords, dim=0).values)
                maxxy = torch.max(maxxy, torch.max(coords, dim=0).values)
            boxes[idx, :2] = minxy
            boxes[idx, 2:] = maxxy
        return Boxes(boxes)

    def nonempty(self) -> torch.Tensor:
        """(N,) bool, True where the instance has at least one polygon."""
        return torch.as_tensor([len(p) > 0 for p in self.polygons], dtype=torch.bool)

    def __getitem__(
        self, item: Union[int, slice, List[int], torch.Tensor]
    ) -> "PolygonMasks":
        """Select instances by int (gives one instance), slice, list of ints, bool mask
        (length N) or integer tensor. Polygon arrays are shared, not copied.

        Raises:
            ValueError: for a tensor index of another dtype or a bool mask that is not 1-D.
        """
        if isinstance(item, (int, np.integer)):
            selected = [self.polygons[item]]
        elif isinstance(item, slice):
            selected = self.polygons[item]
        elif isinstance(item, list):
            selected = [self.polygons[i] for i in item]
        elif isinstance(item, torch.Tensor):
            # The polygons are a Python list: bring the indices to the CPU.
            if item.dtype == torch.bool:
                if item.dim() != 1:
                    raise ValueError(
                        f"Expected a 1-D bool mask to index PolygonMasks, got {tuple(item.shape)}"
                    )
                idx = item.nonzero().squeeze(1).cpu().tolist()
            elif item.dtype in (torch.int32, torch.int64):
                idx = item.cpu().reshape(-1).tolist()
            else:
                raise ValueError(f"Unsupported tensor dtype={item.dtype} for indexing!")
            selected = [self.polygons[i] for i in idx]
        else:
            raise TypeError(f"Cannot index PolygonMasks with {type(item).__name__}")
        return PolygonMasks(selected)

    def __iter__(self) -> Iterator[List[np.ndarray]]:
        """Yield each instance's list of polygons."""
        return iter(self.polygons)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_instances={len(self.polygons)})"

    def __len__(self) -> int:
        return len(self.polygons)

    def crop_and_resize(self, boxes: Union[Boxes, torch.Tensor], mask_size: int) -> torch.Tensor:
        """Rasterise instance i's polygons inside box i on an (M, M) grid, M = ``mask_size``.

        See :func:`rasterize_polygons_within_box` for the geometry.

        Args:
            boxes: N boxes, XYXY image pixels.
            mask_size: M.

        Returns:
            (N, M, M) bool tensor on the boxes' device.
        """
        boxes = _boxes_tensor(boxes)
        if len(boxes) != len(self):
            raise ValueError(f"Got {len(boxes)} boxes for {len(self)} polygon masks")
        device = boxes.device
        boxes_np = boxes.detach().to(dtype=torch.float32).cpu().numpy()  # (N, 4) float32
        results = [
            rasterize_polygons_within_box(poly, box, mask_size)
            for poly, box in zip(self.polygons, boxes_np)
        ]
        if len(results) == 0:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        return torch.stack(results, dim=0).to(device=device)

    def area(self) -> torch.Tensor:
        """(N,) float64 polygon areas (shoelace), summed over each instance's polygons.

        Overlapping polygons are counted twice, and a polygon inside another adds to the area
        rather than cutting a hole (unlike the rasterised mask, whose union counts it once).
        """
        areas = [
            float(sum(polygon_area(p[0::2], p[1::2]) for p in per_instance))
            for per_instance in self.polygons
        ]
        return torch.tensor(areas, dtype=torch.float64)

    @staticmethod
    def cat(polymasks_list: Sequence["PolygonMasks"]) -> "PolygonMasks":
        """Concatenate the instances of several ``PolygonMasks``.

        Raises:
            ValueError: for an empty list.
            TypeError: for a non-PolygonMasks element.
        """
        if not isinstance(polymasks_list, (list, tuple)) or len(polymasks_list) == 0:
            raise ValueError("PolygonMasks.cat needs a non-empty list of PolygonMasks")
        for i, pm in enumerate(polymasks_list):
            if not isinstance(pm, PolygonMasks):
                raise TypeError(f"PolygonMasks.cat: element {i} is a {type(pm).__name__}")
        return type(polymasks_list[0])(
            list(itertools.chain.from_iterable(pm.polygons for pm in polymasks_list))
        )


class ROIMasks:
    """Soft masks defined inside boxes: mask i is an M x M grid stretched over box i.

    This is what the Mask R-CNN head predicts; :meth:`to_bitmasks` pastes them into the image.

    Attributes:
        tensor: (N, M, M) float logits or probabilities, box coordinates.
    """

    def __init__(self, tensor: torch.Tensor):
        """
        Raises:
            ValueError: if ``tensor`` is not 3-D.
        """
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
            shape = tuple(tensor.shape) if hasattr(tensor, "shape") else type(tensor).__name__
            raise ValueError(f"Expected ROI masks of shape (N, M, M), got {shape}")
        self.tensor = tensor

    def to(self, device: Union[str, torch.device]) -> "ROIMasks":
        return ROIMasks(self.tensor.to(device))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "ROIMasks":
        """Select masks by slice, bool mask or integer indices; an int gives one mask.

        Raises:
            IndexError: if the result is not (n, M, M).
        """
        if isinstance(item, (int, np.integer)):
            return ROIMasks(self.tensor[item].unsqueeze(0))  # (M, M) -> (1, M, M)
        t = self.tensor[item]
        if t.dim() != 3:
            raise IndexError(
                f"Indexing ROIMasks with {item!r} gave a tensor of shape {tuple(t.shape)}, "
                "expected (n, M, M)"
            )
        return ROIMasks(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_instances={len(self.tensor)})"

    def to_bitmasks(
        self,
        boxes: Union[Boxes, torch.Tensor],
        height: int,
        width: int,
        threshold: float = 0.5,
    ) -> BitMasks:
        """Paste each mask into its box on a (height, width) image and binarise.

        Args:
            boxes: N boxes, XYXY image pixels.
            height: image height.
            width: image width.
            threshold: see :func:`paste_masks_in_image`; the masks should be probabilities.
        """
        bitmasks = paste_masks_in_image(self.tensor, boxes, (height, width), threshold=threshold)
        return BitMasks(bitmasks)
