"""Run a detector over a folder of images or a COCO json and write features to disk.

Output folder layout (everything loads without pickle)::

    out/config.json             what was extracted and how (checked when resuming)
    out/shard-00000.npz         arrays of shard 0 (``shard_size`` consecutive images)
    out/shard-00000.json        its manifest entry; written last, so its presence means "done"
    ...
    out/manifest.json           all shard entries, written when every shard is done

A shard holds images ``[k * shard_size, (k + 1) * shard_size)`` of the sorted image list, run
in batches of ``batch_size`` starting at the shard's first image, so its content does not
depend on how many processes ran or whether the run was interrupted. Under ``torchrun``, shard
k belongs to rank ``k % world_size``. Each file is written to ``<name>.tmp`` and renamed, the
``.npz`` before its ``.json``: a shard whose ``.json`` is missing (or whose ``.npz`` does not
match the size and SHA-256 recorded there) is redone, so a run killed at any point resumes to
the same files as an uninterrupted one. The zip members carry a fixed timestamp, so equal
arrays give byte-identical files.

While a shard is computed, its finished batches are saved every ``checkpoint_seconds`` (and on
an exception, Ctrl-C or, under the command line, SIGTERM) as ``shard-KKKKK.part-RRRRRR.npz``; a
resumed run takes those rows from there, so a ``kill -9`` loses at most ``checkpoint_seconds``
plus one batch of work, and the finished shard is still byte-identical (parts are removed once
it is done; see :mod:`workbench.extract.folder`).

Writers: ``writer.lock`` is held exclusively by a lone run and shared by the ranks of a sharded
run; ``shard-KKKKK.lock`` is held while shard K is written. A second run on a folder in use
stops with :class:`FolderBusyError` naming the process (pid, host, since) instead of writing
over its files. Ranks write disjoint shards, so they share the folder lock; the shard locks
still keep apart two sharded runs with different world sizes. Locks are ``flock`` s, which die
with their process, and their files are removed on release (:mod:`workbench.extract.locking`).

Arrays of a shard (M images, D detections in total, L levels, C channels):

* always: ``image_index`` (M,) int64 position in the image list, ``image_id`` (M,) str,
  ``image_size`` (M, 2) original (H, W), ``input_size`` (M, 2) resized (h, w) the model saw.
* "detections": ``det/image`` (D,) row in the shard, ``det/boxes`` (D, 4) XYXY original
  pixels, ``det/scores`` (D,), ``det/classes`` (D,), ``det/embeddings`` (D, E) box-head vectors
  (RetinaNet: classification-tower feature at the anchor). RPN-only models give proposals:
  ``det/scores`` are objectness logits and there are no classes or embeddings.
* "det_logits": ``det/logits`` (D, K+1) class logits before NMS.
* "fpn_pooled": ``fpn_pooled/<level>`` (M, C), each feature map averaged over the image's
  unpadded region.
* "fpn": ``fpn/<level>/<row>`` (C, h_l, w_l) each image's unpadded feature map (large).

Shape legend: as above; "level" is a backbone output name ("p2".."p6", "res4").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from workbench.data import transforms as T

from .folder import (ExtractionFolderError, clean_shard, fault, leftovers, read_json, read_npz,
                     read_parts, shard_done, shard_name, write_json, write_npz, write_part)
from .locking import FileLock, FolderBusyError, describe_holders
from .reading import Extracted, load_extracted

__all__ = ["FEATURES", "ImageRecord", "list_images", "extract", "Extracted", "load_extracted",
           "read_npz", "write_npz", "ExtractionFolderError", "FolderBusyError"]

FEATURES = ("detections", "det_logits", "fpn_pooled", "fpn")
FORMAT = "workbench-extract/1"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """One image to process: ``id`` is unique (its path relative to the root, or the COCO id)."""

    index: int
    id: str
    path: str


def list_images(source: Union[str, os.PathLike], image_root: Optional[str] = None,
                recursive: bool = False) -> List[ImageRecord]:
    """The images of a folder (sorted by relative path) or of a COCO json (in file order).

    Example::

        records = list_images("photos/")                      # every .jpg/.png/... in photos/
        records = list_images("annotations/val.json", "val/")  # COCO "images" entries
        extract(model, records[:100], "feats/")                # a subset

    Args:
        image_root: for a COCO json, the folder its ``file_name`` entries are relative to
            (default: the json's folder).
        recursive: for a folder, also look into sub-folders.
    """
    source = Path(source)
    if source.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(p for p in source.glob(pattern)
                       if p.suffix.lower() in _IMAGE_EXTS and p.is_file())
        if not files:
            raise FileNotFoundError(f"No images ({', '.join(_IMAGE_EXTS)}) in {source}.")
        return [ImageRecord(i, p.relative_to(source).as_posix(), str(p)) for i, p in enumerate(files)]
    if source.suffix.lower() == ".json" and source.is_file():
        data = json.loads(source.read_text())
        if not isinstance(data, dict) or "images" not in data:
            raise ValueError(f"{source} is not a COCO json (no 'images' list).")
        root = Path(image_root) if image_root else source.parent
        records = []
        for i, img in enumerate(data["images"]):
            if "file_name" not in img:
                raise ValueError(f"{source}: images[{i}] has no 'file_name'.")
            records.append(ImageRecord(i, str(img.get("id", img["file_name"])),
                                       str(root / img["file_name"])))
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{source}: image ids are not unique.")
        return records
    raise FileNotFoundError(f"{source} is neither a folder of images nor a COCO .json file.")


# -- images --------------------------------------------------------------------------------------

def _load_image(rec: ImageRecord, resize: T.ResizeShortestEdge, input_format: str) -> Dict[str, Any]:
    """Read, orient, convert to the model's channel order and resize, as ``DefaultPredictor``."""
    with Image.open(rec.path) as im:
        im = ImageOps.exif_transpose(im)
        if input_format == "L":
            arr = np.asarray(im.convert("L"))[:, :, None]
        else:
            arr = np.asarray(im.convert("RGB"))
            if input_format == "BGR":
                arr = arr[:, :, ::-1]
    height, width = arr.shape[:2]
    arr = resize.get_transform(arr).apply_image(arr)
    # (h, w, C) -> (C, h, w)
    tensor = torch.as_tensor(np.ascontiguousarray(arr.astype("float32").transpose(2, 0, 1)))
    return {"image": tensor, "height": height, "width": width}


class _Prefetcher:
    """Decodes the next batches in background threads while the model runs."""

    def __init__(self, batches: List[List[ImageRecord]], load, num_workers: int, depth: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=max(1, num_workers))
        self._futures: "queue.Queue" = queue.Queue()
        self._batches = iter(batches)
        self._load = load
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        batch = next(self._batches, None)
        if batch is not None:
            self._futures.put((batch, [self._pool.submit(self._load, r) for r in batch]))

    def __iter__(self):
        return self

    def __next__(self):
        if self._futures.empty():
            self._pool.shutdown(wait=False)
            raise StopIteration
        batch, futures = self._futures.get()
        self._submit()
        return batch, [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- features ------------------------------------------------------------------------------------

def _numpy(t: torch.Tensor, dtype: Optional[np.dtype] = None) -> np.ndarray:
    a = t.detach().cpu().numpy()
    return a.astype(dtype) if dtype is not None and a.dtype != dtype else a


def _batch_arrays(model: nn.Module, batch: List[Dict[str, Any]], features: Sequence[str],
                  float_dtype: np.dtype) -> List[Dict[str, Any]]:
    """Per image, the requested arrays (detections as per-image blocks, concatenated later)."""
    from workbench import inspect as wi  # local: the inspection layer imports the model core

    need_heads = "detections" in features or "det_logits" in features
    with torch.no_grad():
        if need_heads:  # the mask / keypoint heads write nothing here: not run
            tr = wi.trace(model, batch, detections_only=True)
            if not any("instances" in o or "proposals" in o for o in tr.outputs):
                raise ValueError(f"{type(model).__name__} gives no detections; extract "
                                 "'fpn_pooled' or 'fpn'.")
            pre, feats = tr.preprocess, tr.backbone
        else:
            pre = wi.stages.preprocess(model, batch)
            feats = wi.stages.backbone(model, pre)
            tr = None
        per_image: List[Dict[str, Any]] = []
        strides = {k: v.stride for k, v in model.backbone.output_shape().items()}
        for i, (h, w) in enumerate(pre.image_sizes):
            d: Dict[str, Any] = {"image_size": pre.original_sizes[i], "input_size": (h, w)}
            for name, fmap in feats.features.items():
                s = strides[name]
                hs, ws = -(-h // s), -(-w // s)  # ceil: the part of the map the image covers
                valid = fmap[i, :, :hs, :ws]  # (C, hs, ws)
                if "fpn_pooled" in features:
                    d[f"fpn_pooled/{name}"] = _numpy(valid.mean(dim=(1, 2)), float_dtype)
                if "fpn" in features:
                    d[f"fpn/{name}"] = _numpy(valid, float_dtype)
            if need_heads:
                p = tr.provenance(i, anchors=False)
                d["det/boxes"] = _numpy(p.boxes, np.float32)
                d["det/scores"] = _numpy(p.scores if p.scores is not None else p.objectness, np.float32)
                if p.classes is not None:
                    d["det/classes"] = _numpy(p.classes).astype(np.int64)
                if p.embeddings is not None and "detections" in features:
                    d["det/embeddings"] = _numpy(p.embeddings, float_dtype)
                if p.logits is not None and "det_logits" in features:
                    d["det/logits"] = _numpy(p.logits, np.float32)
            per_image.append(d)
    return per_image


def _shard_arrays(records: List[ImageRecord], per_image: List[Dict[str, Any]]) -> Dict[str, np.ndarray]:
    arrays: Dict[str, np.ndarray] = {
        "image_index": np.array([r.index for r in records], dtype=np.int64),
        "image_id": np.array([r.id for r in records], dtype=np.str_),
        "image_size": np.array([d["image_size"] for d in per_image], dtype=np.int64).reshape(-1, 2),
        "input_size": np.array([d["input_size"] for d in per_image], dtype=np.int64).reshape(-1, 2),
    }
    keys = [k for k in per_image[0] if k not in ("image_size", "input_size")]
    for k in keys:
        if k.startswith("fpn_pooled/"):
            arrays[k] = np.stack([d[k] for d in per_image])  # M x (C,) -> (M, C)
        elif k.startswith("fpn/"):
            for row, d in enumerate(per_image):
                arrays[f"{k}/{row}"] = d[k]
    if "det/boxes" in per_image[0]:
        counts = [len(d["det/boxes"]) for d in per_image]
        arrays["det/image"] = np.repeat(np.arange(len(per_image), dtype=np.int64), counts)
        for k in keys:
            if k.startswith("det/"):
                # M x (Di, ...) -> (D, ...)
                arrays[k] = np.concatenate([d[k] for d in per_image], axis=0)
    return arrays


# -- the run -------------------------------------------------------------------------------------

def _dist_info(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def extract(model: nn.Module, source: Union[str, os.PathLike, Sequence[ImageRecord]],
            out_dir: Union[str, os.PathLike], *, features: Sequence[str] = ("detections",),
            batch_size: int = 4, shard_size: int = 64, min_size: int = 800, max_size: int = 1333,
            input_format: str = "BGR", float_dtype: str = "float32", image_root: Optional[str] = None,
            rank: Optional[int] = None, world_size: Optional[int] = None, num_workers: int = 2,
            progress: bool = True, model_info: Optional[Dict[str, Any]] = None,
            checkpoint_seconds: float = 5.0) -> Dict[str, Any]:
    """Extract features of every image of ``source`` into shards under ``out_dir`` (resumable).

    Example::

        extract(model, "photos/", "feats/", features=["detections", "fpn_pooled"],
                min_size=cfg.INPUT.MIN_SIZE_TEST, max_size=cfg.INPUT.MAX_SIZE_TEST)
        emb = load_extracted("feats/").concat("det/embeddings")   # (D, 1024) over all images

    Args:
        model: a workbench detector in eval mode.
        source: a folder of images, a COCO json, or a list of :class:`ImageRecord`.
        features: any of "detections", "det_logits", "fpn_pooled", "fpn" (see module docstring).
        batch_size: images per forward pass; ``shard_size`` must be a multiple of it.
        min_size, max_size: the test-time resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``).
        input_format: "BGR", "RGB" or "L", the model's ``INPUT.FORMAT``.
        float_dtype: dtype of stored feature maps and embeddings ("float32" or "float16").
        rank, world_size: this process's slice; by default from ``torch.distributed`` or the
            RANK / WORLD_SIZE variables ``torchrun`` sets. Shard k is done by rank k % world_size.
        num_workers: image-decoding threads (they overlap with the model).
        progress: show a tqdm progress bar (per rank).
        model_info: free-form description stored in ``config.json`` (e.g. config and weights).
        checkpoint_seconds: save the finished batches of the shard in progress at least this
            often (0: after every batch), so that a killed run loses little work. The output
            does not depend on it.

    Returns:
        The manifest: settings and one entry per shard (this rank's view; ``manifest.json`` on
        disk lists every shard once all ranks are done), plus ``run``: how many images this
        call computed and how many it took from partial shards of an interrupted run.

    Raises:
        FolderBusyError: another run is writing ``out_dir``.
        ExtractionFolderError: ``out_dir``'s ``config.json`` is damaged.
    """
    features = list(dict.fromkeys(features))
    bad = [f for f in features if f not in FEATURES]
    if bad or not features:
        raise ValueError(f"Unknown features {bad}; choose from {FEATURES}.")
    if batch_size < 1 or shard_size < batch_size or shard_size % batch_size:
        raise ValueError(f"shard_size ({shard_size}) must be a positive multiple of batch_size "
                         f"({batch_size}) so that shards are batched the same way on every run.")
    if input_format not in ("BGR", "RGB", "L"):
        raise ValueError(f"input_format must be 'BGR', 'RGB' or 'L', got {input_format!r}.")
    if model.training:
        raise RuntimeError("extract() needs model.eval().")
    if not checkpoint_seconds >= 0:
        raise ValueError(f"checkpoint_seconds must be >= 0, got {checkpoint_seconds}.")
    if ("detections" in features or "det_logits" in features) and not any(
            getattr(model, part, None) is not None for part in ("roi_heads", "proposal_generator", "head")):
        raise ValueError(f"{type(model).__name__} has no detection heads; extract 'fpn_pooled' or 'fpn'.")
    dtype = np.dtype(float_dtype)
    records = list(source) if isinstance(source, (list, tuple)) else list_images(source, image_root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world_size = _dist_info(rank, world_size)

    settings = {
        "format": FORMAT, "features": features, "batch_size": batch_size, "shard_size": shard_size,
        "min_size": min_size, "max_size": max_size, "input_format": input_format,
        "float_dtype": dtype.name, "num_images": len(records), "model": model_info or {},
        "model_class": type(model).__name__,
        "images_sha256": hashlib.sha256(
            "\n".join(f"{r.index}\t{r.id}" for r in records).encode()).hexdigest(),
    }
    role = "lone writer" if world_size == 1 else f"rank {rank} of {world_size}"
    folder_lock = FileLock(out / "writer.lock", shared=world_size > 1, role=role)
    if not folder_lock.acquire():
        raise FolderBusyError(
            f"{out} is being written by another extraction: {describe_holders(folder_lock.path)}. "
            "Two writers on one folder would overwrite each other's files, so this one stops "
            "(the ranks of one torchrun job may share a folder; separate runs may not). Let that "
            "run finish, or stop it, then run this command again: it resumes, keeping every "
            "finished shard. Or write to another output folder.")
    try:
        run = _Run(model, records, out, settings, features, dtype, rank, world_size, role,
                   checkpoint_seconds)
        return run.go(num_workers, progress)
    finally:
        folder_lock.release()


class _Run:
    """One writer's pass over its shards (holding the folder lock)."""

    def __init__(self, model, records, out, settings, features, dtype, rank, world_size, role,
                 checkpoint_seconds):
        self.model, self.records, self.out, self.settings = model, records, out, settings
        self.features, self.dtype, self.rank, self.world_size = features, dtype, rank, world_size
        self.role, self.checkpoint_seconds = role, checkpoint_seconds
        self.size, self.batch = settings["shard_size"], settings["batch_size"]
        self.computed = self.resumed = 0
        self.last_save = time.monotonic()

    def shard(self, k: int) -> List[ImageRecord]:
        return self.records[k * self.size:(k + 1) * self.size]

    def lock_shard(self, k: int) -> FileLock:
        lock = FileLock(self.out / f"{shard_name(k)}.lock", role=self.role)
        if not lock.acquire():
            raise FolderBusyError(
                f"{self.out / shard_name(k)} is being written by another process: "
                f"{describe_holders(lock.path)}. Two sharded runs (torchrun jobs, or runs with "
                f"other rank / world-size settings) are writing {self.out}. Stop one of them, or "
                "let it finish and run this command again (it resumes), or write to another "
                "output folder.")
        return lock

    def check_config(self) -> None:
        out, settings = self.out, self.settings
        config_path = out / "config.json"
        with FileLock(out / "meta.lock", role=self.role):
            if self.rank == 0:
                (out / "config.json.tmp").unlink(missing_ok=True)
            if config_path.is_file():
                old = read_json(config_path, required=list(settings), fix=(
                    "It records the settings the finished shards were made with, so they cannot "
                    f"be checked without it: start over (delete {out} or use another output "
                    "folder). Only if you are rerunning the very command that made this folder, "
                    f"delete {config_path} and run again to keep the finished shards."))
                if old != json.loads(json.dumps(settings, sort_keys=True)):
                    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                    raise ValueError(f"{out} holds an extraction with other settings ({diff} differ); "
                                     "use another output folder or the same settings to resume.")
            elif self.rank == 0:
                write_json(config_path, settings)

    def go(self, num_workers: int, progress: bool) -> Dict[str, Any]:
        self.check_config()
        out, settings = self.out, self.settings
        num_shards = -(-len(self.records) // self.size)
        mine = [k for k in range(num_shards) if k % self.world_size == self.rank]
        names = os.listdir(out)
        todo, resumed = [], {}
        for k in mine:
            if shard_done(out, k) is None:
                todo.append(k)
                shard = self.shard(k)
                rows = read_parts(out, k, names, [r.index for r in shard], [r.id for r in shard],
                                  self.batch)
                if rows:
                    resumed[k] = rows
            elif leftovers(names, k):  # a writer killed after finishing it, before cleaning up
                lock = self.lock_shard(k)
                try:
                    clean_shard(out, k, done=True)
                finally:
                    lock.release()
        resize = T.ResizeShortestEdge([settings["min_size"]] * 2, settings["max_size"])
        batches: List[List[ImageRecord]] = []
        plan = {}
        for k in todo:
            shard = self.shard(k)[len(resumed.get(k, ())):]
            plan[k] = [shard[j:j + self.batch] for j in range(0, len(shard), self.batch)]
            batches.extend(plan[k])
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            total = sum(len(self.shard(k)) for k in mine)
            self.bar = tqdm(total=total, initial=total - sum(len(b) for b in batches), unit="img",
                            desc=f"extract[{self.rank}/{self.world_size}]", position=self.rank,
                            dynamic_ncols=True)
        fmt = settings["input_format"]
        prefetch = _Prefetcher(batches, lambda r: _load_image(r, resize, fmt), num_workers)
        try:
            for k in todo:
                lock = self.lock_shard(k)
                try:
                    # another writer did it (verified: a damaged shard of the right size,
                    # found above, must be redone, not taken as done)
                    if shard_done(out, k) is not None:
                        for _ in plan[k]:
                            next(prefetch)
                    else:
                        clean_shard(out, k, done=False)
                        self.do_shard(k, resumed.pop(k, []), len(plan[k]), prefetch)
                    clean_shard(out, k, done=True)
                finally:
                    lock.release()
        finally:
            prefetch.close()
            if self.bar is not None:
                self.bar.close()

        entries = [shard_done(out, k, verify=False) for k in mine]
        if any(e is None for e in entries):
            raise RuntimeError(f"Shards {[k for k, e in zip(mine, entries) if e is None]} are not complete.")
        _finish(out, settings, num_shards, self.rank, self.world_size)
        logger.info("%s: %d images computed, %d taken from partial shards of an interrupted run",
                    out, self.computed, self.resumed)
        return {**settings, "shards": entries,
                "run": {"images_computed": self.computed, "images_from_partial_shards": self.resumed}}

    def do_shard(self, k: int, rows: List[Dict[str, Any]], num_batches: int, prefetch) -> None:
        """Compute shard k from row ``len(rows)`` on, saving partial shards every
        ``checkpoint_seconds`` and when interrupted by an exception (Ctrl-C, SIGTERM under the CLI)."""
        shard = self.shard(k)
        self.resumed += len(rows)
        saved = len(rows)  # rows [0, saved) are on disk

        def save() -> None:
            nonlocal saved
            part = shard[saved:len(rows)]
            write_part(self.out, k, saved, [r.index for r in part], [r.id for r in part], rows[saved:])
            saved = len(rows)
            self.last_save = time.monotonic()

        try:
            for _ in range(num_batches):
                recs, inputs = next(prefetch)
                row = len(rows)
                rows.extend(_batch_arrays(self.model, inputs, self.features, self.dtype))
                self.computed += len(recs)
                if self.bar is not None:
                    self.bar.update(len(recs))
                fault("batch-done", f"{k}.{row}")
                if (len(rows) < len(shard)
                        and time.monotonic() - self.last_save >= self.checkpoint_seconds):
                    save()
            _commit(self.out, k, shard, rows)
            self.last_save = time.monotonic()
        except BaseException:
            if saved < len(rows):
                try:
                    save()
                except Exception as e:  # keep the original error
                    logger.warning("could not save the finished part of %s: %s", shard_name(k), e)
            raise


def _commit(out: Path, k: int, records: List[ImageRecord], per_image: List[Dict[str, Any]]) -> None:
    arrays = _shard_arrays(records, per_image)
    name = shard_name(k)
    size, digest = write_npz(out / f"{name}.npz", arrays, _shard=k)
    fault("before-json", k)
    entry = {
        "shard": k, "file": f"{name}.npz", "bytes": size, "sha256": digest,
        "image_index": [r.index for r in records], "image_id": [r.id for r in records],
        "num_detections": ([int(len(d["det/boxes"])) for d in per_image]
                           if "det/boxes" in per_image[0] else None),
        "arrays": {n: [list(a.shape), a.dtype.str] for n, a in arrays.items()
                   if not n.startswith("fpn/")},
    }
    write_json(out / f"{name}.json", entry)


def _finish(out: Path, settings: Dict[str, Any], num_shards: int, rank: int, world_size: int) -> None:
    """Write manifest.json once every shard is done (rank 0, after the other ranks)."""
    dist = world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
    if dist:
        torch.distributed.barrier()
    if rank == 0:
        entries = [shard_done(out, k, verify=False) for k in range(num_shards)]
        if all(e is not None for e in entries):
            with FileLock(out / "meta.lock", role="rank 0"):
                write_json(out / "manifest.json", {**settings, "shards": entries})
    if dist:
        torch.distributed.barrier()
