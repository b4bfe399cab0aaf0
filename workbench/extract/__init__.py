"""Dataset-scale feature extraction: ``extract(model, folder_or_coco_json, out_dir)``.

Also a command line, ``python -m workbench.extract --help``. Output: ``.npz`` shards plus JSON
manifests (no pickle anywhere), resumable after a kill (to within a few seconds of work), one
slice per rank under ``torchrun``, one writer (group) per folder at a time. See
:mod:`workbench.extract.core` for the file layout.
"""

from .core import (
    FEATURES,
    Extracted,
    ExtractionFolderError,
    FolderBusyError,
    ImageRecord,
    extract,
    list_images,
    load_extracted,
    read_npz,
    write_npz,
)

__all__ = ["FEATURES", "Extracted", "ExtractionFolderError", "FolderBusyError", "ImageRecord",
           "extract", "list_images", "load_extracted", "read_npz", "write_npz"]
