"""``Instances``: the per-image bag of per-object fields (boxes, classes, scores, masks, ...).

Shape legend:
    N: number of instances in the image; every field has length N.
    H, W: image height and width in pixels (``image_size``).

Semantics and method names follow detectron2 0.6 (``detectron2/structures/instances.py``).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["Instances"]


def _describe(value: Any) -> str:
    """A one-line summary of a field for ``repr``: shapes and dtypes, never the data."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    tensor = getattr(value, "tensor", None)
    if isinstance(tensor, torch.Tensor):  # Boxes, BitMasks, Keypoints, ROIMasks, ...
        return f"{type(value).__name__}(shape={tuple(tensor.shape)}, dtype={tensor.dtype})"
    if isinstance(value, np.ndarray):
        return f"ndarray(shape={value.shape}, dtype={value.dtype})"
    try:
        return f"{type(value).__name__}(len={len(value)})"
    except TypeError:
        return type(value).__name__


class Instances:
    """The instances (detections, proposals or annotations) of one image, stored as fields.

    A field is any object with a length: a tensor, a list, or a structure such as ``Boxes``.
    All fields share that length, which is the number of instances. Fields are read and written
    as attributes (``inst.pred_boxes = Boxes(...)``) or with :meth:`set` / :meth:`get`; every
    other attribute must start with ``_``.

    Indexing applies to every field at once::

        confident = instances[instances.scores > 0.9]
        first = instances[0]  # an Instances of length 1, not a single object

    Attributes:
        image_size: (height, width) of the image the instances live in.
    """

    def __init__(self, image_size: Tuple[int, int], **kwargs: Any):
        """
        Args:
            image_size: (height, width) of the image.
            **kwargs: initial fields, name -> value.
        """
        self._image_size = image_size
        self._fields: Dict[str, Any] = {}
        for k, v in kwargs.items():
            self.set(k, v)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(height, width)."""
        return self._image_size

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, val)
        else:
            self.set(name, val)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. Guard "_fields" so that copy/pickle, which
        # create the object without __init__, get an AttributeError instead of recursing.
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Add or replace the field ``name``.

        Raises:
            TypeError: if ``value`` has no length.
            ValueError: if its length differs from the number of instances already stored
                (checked against the existing fields, as detectron2 does, even when replacing).
        """
        try:
            with warnings.catch_warnings(record=True):  # len() of a traced tensor warns
                data_len = len(value)
        except TypeError as e:
            raise TypeError(
                f"Field '{name}' must have one entry per instance, but a "
                f"{type(value).__name__} has no length"
            ) from e
        if len(self._fields) and len(self) != data_len:
            raise ValueError(
                f"Cannot set field '{name}' of length {data_len} on Instances of length "
                f"{len(self)} (existing fields: {list(self._fields)})"
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        """Whether the field ``name`` exists."""
        return name in self._fields

    def __contains__(self, name: str) -> bool:
        # detectron2's docstring advertises `'gt_masks' in instances`; without this, `in`
        # would fall back to __iter__ and raise.
        return self.has(name)

    def remove(self, name: str) -> None:
        """Delete the field ``name``.

        Raises:
            KeyError: if there is no such field.
        """
        if name not in self._fields:
            raise KeyError(f"Cannot remove field '{name}': fields are {list(self._fields)}")
        del self._fields[name]

    def get(self, name: str) -> Any:
        """The field ``name``.

        Raises:
            KeyError: if there is no such field.
        """
        if name not in self._fields:
            raise KeyError(f"No field '{name}' in Instances: fields are {list(self._fields)}")
        return self._fields[name]

    def get_fields(self) -> Dict[str, Any]:
        """The name -> value dict itself (not a copy): editing it edits this object."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        """A new Instances whose fields had ``.to(*args, **kwargs)`` applied where they have it.

        Fields without ``to`` (e.g. lists) are carried over unchanged.
        """
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if hasattr(v, "to"):
                v = v.to(*args, **kwargs)
            ret.set(k, v)
        return ret

    def __getitem__(
        self, item: Union[int, slice, torch.Tensor, Sequence[int]]
    ) -> "Instances":
        """Index every field with ``item``.

        Args:
            item: an int, a slice, a bool mask of length N or integer indices. An int gives an
                Instances of length 1 (it is turned into a one-element slice, so fields such
                as tensors keep their leading dimension).

        Raises:
            IndexError: for an int out of range.
        """
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            n = len(self)
            if item >= n or item < -n:
                raise IndexError(f"Instances index {item} out of range for length {n}")
            item = slice(int(item), None, n)  # step n: exactly one element
        elif (isinstance(item, torch.Tensor) and item.dtype == torch.bool and item.dim() == 1
              and len(self._fields) > 1 and len(item) == len(self)):
            # A bool mask becomes indices once: each field indexed by the mask would find them
            # again (on a GPU, every such search waits for the device).
            item = item.nonzero().squeeze(1)
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            ret.set(k, v[item])
        return ret

    def __len__(self) -> int:
        for v in self._fields.values():
            # __len__ rather than len(): len() must return an int, unfriendly to tracing.
            return v.__len__()
        raise NotImplementedError("Empty Instances does not support __len__!")

    def __iter__(self):
        raise NotImplementedError("`Instances` object is not iterable!")

    @staticmethod
    def cat(instance_lists: List["Instances"]) -> "Instances":
        """Concatenate instances of the same image.

        Each field is joined according to its type: ``torch.cat`` for tensors, chaining for
        lists, and ``type(v).cat`` for anything with a ``cat`` (``Boxes``, masks, ...).
        A single-element list returns that element itself (not a copy), as in detectron2.

        Raises:
            ValueError: for an empty list, different image sizes or different field names.
            TypeError: for a non-Instances element or a field type that cannot be joined.
        """
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances")
        for i, inst in enumerate(instance_lists):
            if not isinstance(inst, Instances):
                raise TypeError(f"Instances.cat: element {i} is a {type(inst).__name__}")
        if len(instance_lists) == 1:
            return instance_lists[0]

        image_size = instance_lists[0].image_size
        if not isinstance(image_size, torch.Tensor):  # a tensor while tracing
            for i, inst in enumerate(instance_lists[1:], start=1):
                if inst.image_size != image_size:
                    raise ValueError(
                        f"Instances.cat: element {i} has image_size {inst.image_size}, "
                        f"element 0 has {image_size}"
                    )
        names = list(instance_lists[0]._fields.keys())
        for i, inst in enumerate(instance_lists[1:], start=1):
            if set(inst._fields) != set(names):
                raise ValueError(
                    f"Instances.cat: element {i} has fields {sorted(inst._fields)}, "
                    f"element 0 has {sorted(names)}"
                )

        ret = Instances(image_size)
        for k in names:
            values = [inst.get(k) for inst in instance_lists]
            v0 = values[0]
            if isinstance(v0, torch.Tensor):
                joined: Any = torch.cat(values, dim=0)
            elif isinstance(v0, list):
                joined = list(itertools.chain(*values))
            elif hasattr(type(v0), "cat"):
                joined = type(v0).cat(values)
            else:
                raise TypeError(f"Instances.cat: field '{k}' has unsupported type {type(v0)}")
            ret.set(k, joined)
        return ret

    def __repr__(self) -> str:
        # Fields are summarised by type and shape: a repr of thousands of proposals or full
        # image masks is unreadable. An Instances without fields reports 0 instances here,
        # although len() raises for it (detectron2's repr raises as well).
        num = len(self) if self._fields else 0
        fields = ", ".join(f"{k}: {_describe(v)}" for k, v in self._fields.items())
        return (
            f"{type(self).__name__}(num_instances={num}, image_height={self._image_size[0]}, "
            f"image_width={self._image_size[1]}, fields=[{fields}])"
        )

    __str__ = __repr__
