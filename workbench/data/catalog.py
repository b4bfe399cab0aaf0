"""Datasets by name: ``DatasetCatalog`` (name -> function returning ``list[dict]``) and
``MetadataCatalog`` (name -> :class:`Metadata`: class names, colours, keypoint names, ...).

A dataset is a function, not data: it is called each time ``DatasetCatalog.get(name)`` is
used, so registering is cheap and data is read only when needed::

    DatasetCatalog.register("shapes_train", lambda: load_coco_json("train.json", "images/", "shapes_train"))
    MetadataCatalog.get("shapes_train").set(thing_classes=["square", "disc"])
    dicts = DatasetCatalog.get("shapes_train")

The dicts follow detectron2's dataset format: per image ``file_name``, ``height``, ``width``,
``image_id``, optionally ``annotations`` (per instance ``bbox``, ``bbox_mode``,
``category_id`` (contiguous, 0-based), ``segmentation`` (polygons or RLE), ``keypoints``
(flat ``[x, y, v] * K``), ``iscrowd``), ``sem_seg_file_name``, ``pan_seg_file_name`` +
``segments_info``.
"""

from __future__ import annotations

import copy
import logging
import types
from collections import UserDict
from typing import Any, Callable, Dict, List

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]


class _DatasetCatalog(UserDict):
    """A global ``{name: function returning list[dict]}``."""

    def register(self, name: str, func: Callable[[], List[Dict[str, Any]]]) -> None:
        """Registers ``func`` (no arguments) under ``name``; a name can be registered once."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', func) needs a callable, got {type(func).__name__}.")
        if name in self:
            raise KeyError(f"Dataset '{name}' is already registered! Call DatasetCatalog.remove('{name}') first.")
        self[name] = func

    def get(self, name: str) -> List[Dict[str, Any]]:  # type: ignore[override]
        """Calls the function registered under ``name`` and returns its list of dicts."""
        try:
            f = self[name]
        except KeyError as e:
            registered = ", ".join(self.keys()) or "(none)"
            raise KeyError(
                f"Dataset '{name}' is not registered! Available datasets are: {registered}"
            ) from e
        return f()

    def list(self) -> List[str]:  # type: ignore[override]
        """Registered names, in registration order."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.keys())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata(types.SimpleNamespace):
    """Facts about a dataset, as attributes, fixed once set.

    Common keys: ``thing_classes``, ``thing_colors``, ``thing_dataset_id_to_contiguous_id``,
    ``stuff_classes``, ``stuff_dataset_id_to_contiguous_id``, ``keypoint_names``,
    ``keypoint_flip_map`` (pairs of names swapped by a horizontal flip),
    ``keypoint_connection_rules``, ``ignore_label``, ``evaluator_type``, ``json_file``,
    ``image_root``, ``panoptic_json``, ``panoptic_root``.

    Setting an attribute to a different value than it has raises: metadata is shared by
    everything using the dataset, so silently changing it is a bug.
    """

    name: str = "N/A"

    _RENAMED = {
        "class_names": "thing_classes",
        "dataset_id_to_contiguous_id": "thing_dataset_id_to_contiguous_id",
        "stuff_class_names": "stuff_classes",
    }

    def __getattr__(self, key: str) -> Any:
        if key in self._RENAMED:
            logging.getLogger(__name__).warning(
                "Metadata '%s' was renamed to '%s'!", key, self._RENAMED[key])
            return getattr(self, self._RENAMED[key])
        if len(self.__dict__) > 1:
            raise AttributeError(
                f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}'. "
                f"Available keys are {sorted(self.__dict__)}."
            )
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}': "
            "metadata is empty."
        )

    def __setattr__(self, key: str, val: Any) -> None:
        if key in self._RENAMED:
            logging.getLogger(__name__).warning(
                "Metadata '%s' was renamed to '%s'!", key, self._RENAMED[key])
            setattr(self, self._RENAMED[key], val)
            return
        try:
            oldval = getattr(self, key)
        except AttributeError:
            super().__setattr__(key, val)
            return
        if oldval != val:
            raise AttributeError(
                f"Attribute '{key}' in the metadata of '{self.name}' cannot be set to a different "
                f"value!\n{oldval} != {val}"
            )

    def as_dict(self) -> Dict[str, Any]:
        """A shallow copy of all attributes."""
        return copy.copy(self.__dict__)

    def set(self, **kwargs: Any) -> "Metadata":
        """Sets several attributes; returns ``self``."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` if it is not set."""
        try:
            return getattr(self, key)
        except AttributeError:
            return default


class _MetadataCatalog(UserDict):
    """A global ``{name: Metadata}``; ``get`` creates an empty :class:`Metadata` on first use."""

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        if not name:
            raise ValueError("MetadataCatalog.get() needs a non-empty dataset name.")
        r = super().get(name, None)
        if r is None:
            r = self[name] = Metadata(name=name)
        return r

    def list(self) -> List[str]:  # type: ignore[override]
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)

    def __str__(self) -> str:
        return f"MetadataCatalog(registered metadata: {', '.join(self.keys())})"

    __repr__ = __str__


MetadataCatalog = _MetadataCatalog()
