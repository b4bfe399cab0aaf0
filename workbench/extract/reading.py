"""Reading a finished extraction folder: :func:`load_extracted` and :class:`Extracted`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, Union

import numpy as np

from .folder import RERUN_ADVICE, ExtractionFolderError, read_json, read_npz

__all__ = ["Extracted", "load_extracted"]

_RERUN = RERUN_ADVICE


class Extracted:
    """An extraction folder: its manifest and lazy access to the shards.

    Example::

        ds = load_extracted("feats/")
        ds.concat("det/embeddings").shape, ds.concat("fpn_pooled/p5").shape
        for arrays in ds: ...              # one dict of arrays per shard, in order
    """

    def __init__(self, out_dir: Union[str, os.PathLike]):
        self.root = Path(out_dir)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: the extraction is not finished "
                                    "(run it again to resume).")
        self.manifest: Dict[str, Any] = read_json(
            path, required=("format", "features", "num_images", "shards"), fix=_RERUN)
        shards = self.manifest["shards"]
        if not isinstance(shards, list) or not all(
                isinstance(e, dict) and isinstance(e.get("file"), str) and "bytes" in e for e in shards):
            raise ExtractionFolderError(f"{path} has a damaged 'shards' list (each entry needs "
                                        f"'file' and 'bytes'): the extraction folder {self.root} "
                                        f"is incomplete or damaged. {_RERUN}")

    def __len__(self) -> int:
        return len(self.manifest["shards"])

    def shard(self, k: int) -> Dict[str, np.ndarray]:
        entry = self.manifest["shards"][k]
        path = self.root / entry["file"]
        size = path.stat().st_size if path.is_file() else None
        if size != entry["bytes"]:
            found = "is missing" if size is None else f"has {size} bytes"
            raise ExtractionFolderError(f"{path} {found}, but {self.root / 'manifest.json'} "
                                        f"says {entry['bytes']}: the extraction folder is "
                                        f"damaged. {_RERUN}")
        return read_npz(path)

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        for k in range(len(self)):
            yield self.shard(k)

    def concat(self, name: str) -> np.ndarray:
        """One array over all shards (``det/image`` becomes the global ``image_index``)."""
        parts = []
        for arrays in self:
            if name == "det/image":
                parts.append(arrays["image_index"][arrays["det/image"]])
            else:
                parts.append(arrays[name])
        return np.concatenate(parts, axis=0)

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Extracted({self.root}, {m['num_images']} images in {len(self)} shards, "
                f"features={m['features']})")


def load_extracted(out_dir: Union[str, os.PathLike]) -> Extracted:
    """Open a finished extraction folder (see :class:`Extracted`).

    Example::

        ds = load_extracted("feats/")
        emb, img = ds.concat("det/embeddings"), ds.concat("det/image")   # (D, E), (D,)
        ds.manifest["shards"][0]["image_id"]
    """
    return Extracted(out_dir)
