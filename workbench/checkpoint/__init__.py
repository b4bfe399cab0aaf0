"""Checkpoints: saving, loading (detectron2, Caffe2 / Detectron1 and torch formats), downloads.

``DetectionCheckpointer(model).load(path)`` reads local files, URLs and ``detectron2://``
model-zoo names without ever running code from the file; ``DetectionCheckpointer(model,
save_dir).save(name)`` writes ``save_dir/name.pth``.
"""

from . import catalog
from .c2_model_loading import align_and_update_state_dicts
from .catalog import DownloadError, get_cache_dir, get_local_path
from .detection_checkpoint import (
    Checkpointer,
    CheckpointLoadError,
    CheckpointMismatchError,
    DetectionCheckpointer,
    IncompatibleKeys,
    PeriodicCheckpointer,
)
from .safe_pickle import UnsafePickleError, safe_load_pickle

__all__ = [
    "Checkpointer",
    "CheckpointLoadError",
    "CheckpointMismatchError",
    "DetectionCheckpointer",
    "DownloadError",
    "IncompatibleKeys",
    "PeriodicCheckpointer",
    "UnsafePickleError",
    "align_and_update_state_dicts",
    "catalog",
    "get_cache_dir",
    "get_local_path",
    "safe_load_pickle",
]
