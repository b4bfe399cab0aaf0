"""Saving and loading models (and optimizers, schedulers, ...) to and from checkpoint files.

:class:`Checkpointer` and :class:`PeriodicCheckpointer` behave like fvcore's, which detectron2
re-exports; :class:`DetectionCheckpointer` adds detectron2's handling of model-zoo formats.
Which file is read how:

- ``*.pkl`` holding ``"model"`` and ``"__author__"``: detectron2 model zoo, ``{name: ndarray}``;
- any other ``*.pkl`` (``{"blobs": ...}`` or a flat ``{name: ndarray}``): Caffe2 / Detectron1,
  renamed by heuristics;
- anything else (``*.pth``, ``*.pt``, ...): ``torch.load(weights_only=True)``; a bare state
  dict is wrapped as ``{"model": ...}``.

Names are matched by heuristics (:func:`~.c2_model_loading.align_and_update_state_dicts`)
when the file says ``"matching_heuristics": True``, when it is a Caffe2 file, or when the path
ends in ``?matching_heuristics=True``. ``.pkl`` files go through a restricted unpickler and
``.pth`` files through torch's weights-only unpickler (both in :mod:`.safe_load`), so loading
never runs code from the file.

Paths can be local files, ``http(s)://`` URLs or ``detectron2://`` model-zoo names (see
:mod:`.catalog`), or start with a prefix registered on the checkpointer's ``path_manager``
(:mod:`workbench.utils.file_io`), whose handler then provides the local file.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import parse_qs

import numpy as np
import torch
from torch import nn

from workbench.utils.file_io import (
    Detectron2Handler,
    HTTPURLHandler,
    NativePathHandler,
    PathManager,
    PathManagerBase,
)

from . import catalog
from workbench.utils.atomic_files import atomic_write as _atomic_write  # noqa: F401
from workbench.utils.atomic_files import is_temp_file, remove_stale_temp_files
from .c2_model_loading import align_and_update_state_dicts
from .key_messages import get_missing_parameters_message, get_unexpected_parameters_message
# Reading a file without running code from it lives in .safe_load; its names (and the
# safe_pickle names this module used to import for it) stay importable from here.
from .safe_load import (  # noqa: F401
    CheckpointLoadError,
    _damaged_message,
    _globals_in_torch_file,
    _is_weight_global,
    _numpy_globals,
    _pickle_load,
    _torch_load,
    _torch_reason,
)
from .safe_pickle import UnsafePickleError, allowed_globals, find_pickle_globals, safe_load_pickle  # noqa: F401

__all__ = [
    "Checkpointer",
    "CheckpointLoadError",
    "CheckpointMismatchError",
    "DetectionCheckpointer",
    "IncompatibleKeys",
    "PeriodicCheckpointer",
    "get_missing_parameters_message",
    "get_unexpected_parameters_message",
]


class IncompatibleKeys(NamedTuple):
    """What did not load, as returned by ``_load_model`` and kept in
    :attr:`Checkpointer.incompatible_keys` after each :meth:`Checkpointer.load`."""

    #: Model keys the checkpoint gave no value for.
    missing_keys: List[str]
    #: Checkpoint keys the model has no place for.
    unexpected_keys: List[str]
    #: ``(key, shape in checkpoint, shape in model)`` of entries skipped for their shape.
    incorrect_shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]


class CheckpointMismatchError(CheckpointLoadError):
    """None of a checkpoint's keys fit the model, so nothing was loaded into it."""


def _is_main_process() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class Checkpointer:
    """Saves and loads a model together with other objects that have ``state_dict()``.

    Args:
        model: The model. ``DataParallel`` / ``DistributedDataParallel`` wrappers are unwrapped.
        save_dir: Folder for :meth:`save` and the ``last_checkpoint`` tag; ``""`` disables
            saving.
        save_to_disk: ``False`` makes :meth:`save` a no-op (e.g. on non-main processes).
        **checkpointables: Other objects to save and restore, e.g. ``optimizer=optimizer``.

    Attributes:
        incompatible_keys: :class:`IncompatibleKeys` of the last :meth:`load` (``None`` before).
        allow_no_match: Default of :meth:`load`'s ``allow_no_match`` (``False``: a checkpoint
            none of whose keys fit the model is an error).
        path_manager: Resolves paths given to :meth:`load` whose prefix has a registered
            handler (default: the global :data:`workbench.utils.file_io.PathManager`).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool = True,
                 **checkpointables: Any) -> None:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        self.model = model
        self.checkpointables: Dict[str, Any] = {}
        for key, obj in checkpointables.items():
            self.add_checkpointable(key, obj)
        self.logger = logging.getLogger(__name__)
        self.save_dir = save_dir
        self.save_to_disk = save_to_disk
        self.incompatible_keys: Optional[IncompatibleKeys] = None
        self.allow_no_match = False
        self.path_manager: PathManagerBase = PathManager
        # (model keys loaded, checkpoint keys offered), set by _load_model.
        self._match: Optional[Tuple[int, List[str]]] = None

    def add_checkpointable(self, key: str, checkpointable: Any) -> None:
        """Tracks one more object with ``state_dict()`` / ``load_state_dict()`` under ``key``."""
        if key in self.checkpointables or key == "model":
            raise KeyError(f"Key '{key}' is already used in the checkpointer.")
        if not hasattr(checkpointable, "state_dict"):
            raise TypeError(
                f"Checkpointable '{key}' needs a state_dict() method; got {type(checkpointable).__name__}."
            )
        self.checkpointables[key] = checkpointable

    # ------------------------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Writes ``save_dir/name.pth`` and points ``save_dir/last_checkpoint`` at it.

        The file holds ``{"model": model.state_dict(), <checkpointable>: its state_dict(),
        **kwargs}``. It is written to a temporary file in ``save_dir`` and renamed, so an
        interrupted save never leaves a partial ``name.pth``. Temporary files that killed
        saves left in ``save_dir`` are deleted first (see :mod:`workbench.utils.atomic_files`; those of saves
        still running are kept).

        Args:
            name: File name without the ``.pth`` extension (no folders).
            **kwargs: Extra picklable data, returned by :meth:`load` (e.g. ``iteration=...``).
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"Checkpoint name must be a plain file name, got '{name}'.")
        save_file = os.path.join(self.save_dir, basename)
        self._remove_stale_temp_files()
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_write(save_file, lambda f: torch.save(data, f), binary=True)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Writes ``last_filename_basename`` into ``save_dir/last_checkpoint``."""
        _atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                      lambda f: f.write(last_filename_basename), binary=False)

    def has_checkpoint(self) -> bool:
        """Whether ``save_dir`` holds a ``last_checkpoint`` tag naming a checkpoint."""
        return self.get_checkpoint_file() != ""

    def get_checkpoint_file(self) -> str:
        """The latest checkpoint file in ``save_dir``, or ``""`` if there is none."""
        try:
            with open(os.path.join(self.save_dir, "last_checkpoint")) as f:
                last_saved = f.read().strip()
        except OSError:
            # Missing, or just deleted by another process.
            return ""
        if not last_saved or is_temp_file(last_saved):
            return ""
        return os.path.join(self.save_dir, last_saved)

    def get_all_checkpoint_files(self) -> List[str]:
        """All ``.pth`` files in ``save_dir`` (not the temporary files of saves)."""
        if not os.path.isdir(self.save_dir):
            return []
        return [
            os.path.join(self.save_dir, f) for f in sorted(os.listdir(self.save_dir))
            if f.endswith(".pth") and not is_temp_file(f)
            and os.path.isfile(os.path.join(self.save_dir, f))
        ]

    def _remove_stale_temp_files(self) -> None:
        """Deletes what killed saves of a checkpointer left in ``save_dir``: temporary
        ``.<name>.pth.*.tmp`` and ``.last_checkpoint.*.tmp`` files whose writer is gone."""
        if self.save_dir and self.save_to_disk:
            remove_stale_temp_files(
                self.save_dir, lambda target: target == "last_checkpoint" or target.endswith(".pth"))

    # ------------------------------------------------------------------------------ loading
    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Resumes from ``save_dir``'s last checkpoint if ``resume`` and one exists (model and
        every checkpointable); otherwise loads only the model from ``path``.

        Returns:
            Same as :meth:`load`.
        """
        if resume and self.has_checkpoint():
            return self.load(self.get_checkpoint_file())
        return self.load(path, checkpointables=[])

    def load(self, path: str, checkpointables: Optional[List[str]] = None, *,
             allow_no_match: Optional[bool] = None) -> Dict[str, Any]:
        """Loads the model, and the checkpointables, from a checkpoint.

        Model keys the file does not provide, and file keys the model has no place for, are
        logged as warnings. A file none of whose keys load into the model (another model's
        checkpoint, or names that need ``?matching_heuristics=True``) is an error.

        Args:
            path: Local file, URL or ``detectron2://`` name, optionally followed by
                ``?matching_heuristics=True``. Empty: nothing is loaded.
            checkpointables: Names of the checkpointables to restore; ``None`` means all that
                the file contains.
            allow_no_match: ``True`` accepts a file of which no key loads into the model
                (nothing is loaded; the keys are logged). ``None``: :attr:`allow_no_match`.

        Returns:
            What the file holds besides the model and the restored checkpointables, e.g.
            ``{"iteration": 999}`` or ``{"__author__": ...}``. Keys that did not load are in
            :attr:`incompatible_keys` and in the log.

        Raises:
            FileNotFoundError / catalog.DownloadError: The file cannot be found or fetched.
            UnsafePickleError: The file asks to run code (nothing from it has run).
            CheckpointLoadError: The file is truncated, corrupt or of an unknown layout.
            CheckpointMismatchError: No key of the file loaded into the model (the model is
                unchanged), and ``allow_no_match`` is not set.
        """
        self.incompatible_keys = None
        self._match = None
        self._remove_stale_temp_files()
        if not path:
            self.logger.info("No checkpoint found. Initializing model from scratch")
            return {}
        path = os.fspath(path)
        self.logger.info("Loading checkpoint from %s", path)
        filename, query = _split_query(path)
        local = self._get_local_path(filename)

        checkpoint = self._load_file(local)
        _apply_query(checkpoint, query, path)
        incompatible = self._load_model(checkpoint)
        if incompatible is not None:
            incompatible = self._filter_incompatible(incompatible)
            self.incompatible_keys = incompatible
            if not (self.allow_no_match if allow_no_match is None else allow_no_match):
                self._check_something_loaded(path, incompatible)
            self._log_incompatible_keys(incompatible)

        for key in self.checkpointables if checkpointables is None else checkpointables:
            if key in checkpoint:
                self.logger.info("Loading %s from %s", key, path)
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
        return checkpoint

    def _check_something_loaded(self, path: str, incompatible: IncompatibleKeys) -> None:
        """Raises :class:`CheckpointMismatchError` if no key of the file loaded into a model
        that has keys."""
        model_keys = list(self.model.state_dict().keys())
        if self._match is None or self._match[0] > 0 or not model_keys:
            return

        def _n_keys(keys: List[str]) -> str:
            return f"{len(keys)} key{'' if len(keys) == 1 else 's'}"

        def some(keys: List[str]) -> str:
            shown = ", ".join(repr(k) for k in sorted(keys)[:3])
            return shown + (", ..." if len(keys) > 3 else "") if keys else "none"

        ckpt_keys = self._match[1]
        shapes = ""
        if incompatible.incorrect_shapes:
            key, in_file, in_model = incompatible.incorrect_shapes[0]
            shapes = (f"; {len(incompatible.incorrect_shapes)} of them have model names but "
                      f"other shapes (e.g. {key!r}: {tuple(in_file)} in the file, "
                      f"{tuple(in_model)} in the model)")
        raise CheckpointMismatchError(
            f"Checkpoint '{path}' matches none of the model's keys, so nothing was loaded into "
            f"the {type(self.model).__name__}: {_n_keys(ckpt_keys)} in the file ({some(ckpt_keys)}), "
            f"{len(model_keys)} in the model ({some(model_keys)}){shapes}. Is it a checkpoint "
            "of another model, or are its names different (Caffe2 / Detectron1 names load with "
            "'?matching_heuristics=True' after the path)? To load it anyway, pass "
            "allow_no_match=True to load() or set checkpointer.allow_no_match = True."
        )

    def _get_local_path(self, path: str) -> str:
        """Local file for ``path``: through :attr:`path_manager` when a registered prefix claims
        it; local paths, ``file://``, URLs and ``detectron2://`` through :mod:`.catalog` (its
        checksums and error messages)."""
        handler = self.path_manager._get_path_handler(path)
        if type(handler) in (NativePathHandler, HTTPURLHandler, Detectron2Handler):
            return catalog.get_local_path(path)
        local = self.path_manager.get_local_path(path)
        if not os.path.isfile(local):
            raise FileNotFoundError(
                f"Checkpoint '{path}' resolved (by {type(handler).__name__}) to '{local}', "
                "which is not a file."
            )
        return local

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """Reads a local checkpoint file into a dict with a ``"model"`` entry."""
        loaded = _torch_load(filename)
        if not isinstance(loaded, dict):
            raise CheckpointLoadError(
                f"Checkpoint '{filename}' holds a {type(loaded).__name__}; expected a dict "
                "(a state dict, or {'model': state_dict, ...})."
            )
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _load_model(self, checkpoint: Dict[str, Any]) -> IncompatibleKeys:
        """Copies ``checkpoint.pop("model")`` into the model, skipping entries whose shape does
        not fit."""
        state_dict = checkpoint.pop("model")
        _check_state_dict(state_dict)
        state_dict = _to_tensors(state_dict)
        # Checkpoints saved from a (Distributed)DataParallel wrapper prefix every key "module.".
        _strip_prefix_if_present(state_dict, "module.")

        model_state_dict = self.model.state_dict()
        offered = list(state_dict.keys())
        incorrect_shapes = []
        for k in list(state_dict.keys()):
            if k not in model_state_dict:
                continue
            target = model_state_dict[k]
            if isinstance(target, nn.parameter.UninitializedParameter):
                continue  # lazy modules take any shape
            shape_model, shape_ckpt = tuple(target.shape), tuple(state_dict[k].shape)
            if shape_model != shape_ckpt:
                incorrect_shapes.append((k, shape_ckpt, shape_model))
                state_dict.pop(k)
        result = self.model.load_state_dict(state_dict, strict=False)
        self._match = (len(state_dict) - len(result.unexpected_keys), offered)
        return IncompatibleKeys(list(result.missing_keys), list(result.unexpected_keys), incorrect_shapes)

    def _filter_incompatible(self, incompatible: IncompatibleKeys) -> IncompatibleKeys:
        """Drops missing keys that were loaded under another name of the same tensor."""
        missing = _filter_reused_missing_keys(self.model, incompatible.missing_keys)
        return incompatible._replace(missing_keys=missing)

    def _log_incompatible_keys(self, incompatible: IncompatibleKeys) -> None:
        for key, shape_ckpt, shape_model in incompatible.incorrect_shapes:
            self.logger.warning(
                "Skip loading parameter '%s' to the model due to incompatible shapes: %s in the "
                "checkpoint but %s in the model! You might want to double check if this is "
                "expected.", key, shape_ckpt, shape_model,
            )
        if incompatible.missing_keys:
            self.logger.warning(get_missing_parameters_message(incompatible.missing_keys))
        if incompatible.unexpected_keys:
            self.logger.warning(get_unexpected_parameters_message(incompatible.unexpected_keys))


class DetectionCheckpointer(Checkpointer):
    """A :class:`Checkpointer` that also reads detectron2 and Caffe2 / Detectron1 model-zoo
    files, renaming legacy weights by heuristics (see the module doc).

    Args:
        model: The model.
        save_dir: Folder for :meth:`save`.
        save_to_disk: Defaults to "this is the main process" (rank 0 or not distributed).
        **checkpointables: Other objects to save and restore, e.g. ``optimizer=optimizer``.

    Example::

        DetectionCheckpointer(model).load("detectron2://COCO-InstanceSegmentation/"
                                          "mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl")
        checkpointer = DetectionCheckpointer(model, save_dir="output")
        checkpointer.save("model_999")  # output/model_999.pth
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: Optional[bool] = None,
                 **checkpointables: Any) -> None:
        super().__init__(
            model, save_dir,
            save_to_disk=_is_main_process() if save_to_disk is None else save_to_disk,
            **checkpointables,
        )

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            data = _pickle_load(filename)
            if not isinstance(data, dict):
                raise CheckpointLoadError(
                    f"'{filename}' holds a {type(data).__name__}; a .pkl checkpoint must hold a "
                    "dict ({'model': ..., '__author__': ...}, {'blobs': ...} or {name: array})."
                )
            if "model" in data and "__author__" in data:
                # detectron2 model zoo format.
                self.logger.info("Reading a file from '%s'", data["__author__"])
                return data
            # Caffe2 / Detectron1 model zoo. Detection models keep their weights under
            # "blobs" (next to e.g. "cfg"); ImageNet models are a flat {name: array}.
            if "blobs" in data:
                data = data["blobs"]
            if not isinstance(data, Mapping):
                raise CheckpointLoadError(
                    f"'{filename}' has 'blobs' of type {type(data).__name__}; expected a dict."
                )
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        return super()._load_file(filename)

    def _load_model(self, checkpoint: Dict[str, Any]) -> IncompatibleKeys:
        if checkpoint.get("matching_heuristics", False):
            _check_state_dict(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(),
                _to_tensors(checkpoint["model"]),
                c2_conversion=checkpoint.get("__author__", None) == "Caffe2",
            )
        incompatible = super()._load_model(checkpoint)

        # pixel_mean / pixel_std come from the config; old checkpoints may lack them.
        own_buffers = dict(self.model.named_buffers(recurse=False))
        missing = [k for k in incompatible.missing_keys
                   if not (k in ("pixel_mean", "pixel_std") and k in own_buffers)]
        # Old checkpoints stored cell anchors, which are now non-persistent buffers.
        unexpected = [k for k in incompatible.unexpected_keys if "anchor_generator.cell_anchors" not in k]
        return incompatible._replace(missing_keys=missing, unexpected_keys=unexpected)


class PeriodicCheckpointer:
    """Calls ``checkpointer.save`` every ``period`` iterations and at the last one.

    Args:
        checkpointer: Saves the files.
        period: Save after iterations ``period - 1``, ``2 period - 1``, ... as
            ``{file_prefix}_{iteration:07d}.pth``.
        max_iter: If given, save ``{file_prefix}_final.pth`` at iteration ``max_iter - 1``.
        max_to_keep: Keep only this many of the periodic files, deleting the oldest
            (``{file_prefix}_final.pth`` is never deleted).
        file_prefix: File name prefix.
    """

    def __init__(self, checkpointer: Checkpointer, period: int, max_iter: Optional[int] = None,
                 max_to_keep: Optional[int] = None, file_prefix: str = "model") -> None:
        self.checkpointer = checkpointer
        self.period = int(period)
        if self.period <= 0:
            raise ValueError(f"period must be a positive number of iterations, got {period}.")
        self.max_iter = max_iter
        if max_to_keep is not None and max_to_keep <= 0:
            raise ValueError(f"max_to_keep must be positive or None, got {max_to_keep}.")
        self.max_to_keep = max_to_keep
        self.recent_checkpoints: List[str] = []
        self.file_prefix = file_prefix

    def step(self, iteration: int, **kwargs: Any) -> None:
        """Saves if ``iteration`` (0-based) ends a period or is the last one.

        Args:
            iteration: The iteration that just finished, in ``[0, max_iter - 1]``.
            **kwargs: Extra data to save; ``iteration`` is always added.
        """
        iteration = int(iteration)
        additional_state = {"iteration": iteration, **kwargs}
        if (iteration + 1) % self.period == 0:
            self.checkpointer.save(f"{self.file_prefix}_{iteration:07d}", **additional_state)
            if self.max_to_keep is not None:
                self.recent_checkpoints.append(self.checkpointer.get_checkpoint_file())
                if len(self.recent_checkpoints) > self.max_to_keep:
                    stale = self.recent_checkpoints.pop(0)
                    if os.path.exists(stale) and not stale.endswith(f"{self.file_prefix}_final.pth"):
                        os.remove(stale)
        if self.max_iter is not None and iteration >= self.max_iter - 1:
            self.checkpointer.save(f"{self.file_prefix}_final", **additional_state)

    def save(self, name: str, **kwargs: Any) -> None:
        """Saves now, outside the schedule (same arguments as :meth:`Checkpointer.save`)."""
        self.checkpointer.save(name, **kwargs)


# ------------------------------------------------------------------------------------- helpers
def _split_query(path: str) -> Tuple[str, str]:
    """``"x.pth?matching_heuristics=True"`` -> ``("x.pth", "matching_heuristics=True")``; an
    existing local file whose name contains "?" is kept whole."""
    if "?" not in path or os.path.isfile(path):
        return path, ""
    filename, _, query = path.partition("?")
    return filename, query


def _apply_query(checkpoint: Dict[str, Any], query: str, path: str) -> None:
    if not query:
        return
    queries = parse_qs(query, keep_blank_values=True)
    flag = queries.pop("matching_heuristics", None)
    if flag is not None:
        if flag not in (["True"], ["False"]):
            raise ValueError(f"matching_heuristics must be True or False in '{path}', got {flag}.")
        if flag == ["True"]:
            checkpoint["matching_heuristics"] = True
    if queries:
        raise ValueError(
            f"Unsupported query {sorted(queries)} in checkpoint path '{path}'; only "
            "matching_heuristics=True is understood."
        )


def _check_state_dict(state_dict: Any) -> None:
    if not isinstance(state_dict, Mapping):
        raise CheckpointLoadError(
            f"The checkpoint's 'model' entry is a {type(state_dict).__name__}; expected a dict "
            "of parameter name -> tensor or numpy array."
        )
    for k, v in state_dict.items():
        if not isinstance(v, (np.ndarray, torch.Tensor)):
            raise CheckpointLoadError(
                f"Unsupported type found in checkpoint! {k}: {type(v).__name__} (expected a "
                "tensor or a numpy array)."
            )


def _to_tensors(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Numpy arrays -> tensors sharing their bits (byte order made native); keeps the order and
    the ``_metadata`` attribute of a ``state_dict()``."""
    out = copy.copy(state_dict) if isinstance(state_dict, dict) else dict(state_dict)
    for k, v in out.items():
        if isinstance(v, np.ndarray):
            if not v.dtype.isnative:
                v = v.astype(v.dtype.newbyteorder("="))
            if not v.flags.writeable or any(stride < 0 for stride in v.strides):
                v = v.copy()  # torch.from_numpy needs writable, positively strided memory
            out[k] = torch.from_numpy(v)
    return out


def _strip_prefix_if_present(state_dict: Dict[str, Any], prefix: str) -> None:
    keys = sorted(state_dict.keys())
    if not keys or not all(k.startswith(prefix) for k in keys):
        return
    for k in keys:
        state_dict[k[len(prefix):]] = state_dict.pop(k)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for k in list(metadata.keys()):
            # "" is the wrapper itself; "module" and "module.x" belong to the model.
            if k:
                metadata[k[len(prefix):]] = metadata.pop(k)


def _named_modules_with_dup(model: nn.Module, prefix: str = "") -> Iterable[Tuple[str, nn.Module]]:
    """``named_modules()`` including modules reachable under more than one name."""
    yield prefix, model
    for name, module in model._modules.items():
        if module is not None:
            yield from _named_modules_with_dup(module, prefix + ("." if prefix else "") + name)


def _filter_reused_missing_keys(model: nn.Module, keys: List[str]) -> List[str]:
    """Drops a missing key if the same tensor was loaded under another of its names."""
    keyset = set(keys)
    names_of: Dict[int, set] = defaultdict(set)
    for prefix, module in _named_modules_with_dup(model):
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            names_of[id(t)].add((prefix + "." if prefix else "") + name)
    for names in names_of.values():
        if any(n in keyset for n in names) and not all(n in keyset for n in names):
            keyset -= names
    return [k for k in keys if k in keyset]
