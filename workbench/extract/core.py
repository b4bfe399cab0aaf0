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
import os
import queue
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from workbench.data import transforms as T

__all__ = ["FEATURES", "ImageRecord", "list_images", "extract", "Extracted", "load_extracted",
           "read_npz", "write_npz"]

FEATURES = ("detections", "det_logits", "fpn_pooled", "fpn")
FORMAT = "workbench-extract/1"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Fault injection for the tests: "<point>:<shard>" makes the process exit abruptly there.
_FAULT_ENV = "WORKBENCH_EXTRACT_FAULT"


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


# -- files ---------------------------------------------------------------------------------------

def _fault(point: str, shard: int) -> None:
    if os.environ.get(_FAULT_ENV) == f"{point}:{shard}":
        os._exit(17)  # as abrupt as a kill: no cleanup, no flush


def write_npz(path: Union[str, os.PathLike], arrays: Dict[str, np.ndarray], *,
              _shard: int = -1) -> Tuple[int, str]:
    """Write an uncompressed ``.npz`` atomically and reproducibly (fixed zip timestamps).

    Example::

        write_npz("a.npz", {"x": np.zeros(3)})   # a.npz.tmp, then renamed to a.npz
        read_npz("a.npz")["x"]
        write_npz("b.npz", {"x": np.zeros(3)})   # byte-identical to a.npz

    Returns:
        (size in bytes, SHA-256 hex digest) of the file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for n, (name, arr) in enumerate(arrays.items()):
            arr = np.asarray(arr)
            if arr.dtype == object:
                raise TypeError(f"Array {name!r} has dtype object, which would need pickle.")
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
            if n == len(arrays) // 2:
                _fault("npz-partial", _shard)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return _file_digest(path)


def _file_digest(path: Path) -> Tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def read_npz(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """All arrays of a shard, loaded without pickle.

    Example::

        arrays = read_npz("feats/shard-00000.npz")
        arrays["det/embeddings"][arrays["det/image"] == 0]   # embeddings of the shard's 1st image
        arrays["image_id"]
    """
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _shard_done(out: Path, k: int, verify: bool = True) -> Optional[Dict[str, Any]]:
    """The manifest entry of shard k if it is complete (and, with ``verify``, intact), else None."""
    meta_path = out / f"{_shard_name(k)}.json"
    npz_path = out / f"{_shard_name(k)}.npz"
    if not meta_path.is_file() or not npz_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if npz_path.stat().st_size != meta.get("bytes"):
        return None
    if verify and _file_digest(npz_path)[1] != meta.get("sha256"):
        return None
    return meta


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
            progress: bool = True, model_info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
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

    Returns:
        The manifest: settings and one entry per shard (this rank's view; ``manifest.json`` on
        disk lists every shard once all ranks are done).
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
    config_path = out / "config.json"
    if config_path.is_file():
        old = json.loads(config_path.read_text())
        if old != json.loads(json.dumps(settings, sort_keys=True)):
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out} holds an extraction with other settings ({diff} differ); use "
                             "another output folder or the same settings to resume.")
    elif rank == 0:
        _write_json(config_path, settings)

    num_shards = -(-len(records) // shard_size)
    mine = [k for k in range(num_shards) if k % world_size == rank]
    todo = [k for k in mine if _shard_done(out, k) is None]
    resize = T.ResizeShortestEdge([min_size, min_size], max_size)

    batches: List[List[ImageRecord]] = []
    for k in todo:
        shard = records[k * shard_size:(k + 1) * shard_size]
        batches.extend(shard[j:j + batch_size] for j in range(0, len(shard), batch_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(len(records[k * shard_size:(k + 1) * shard_size]) for k in mine)
        bar = tqdm(total=total, initial=total - sum(len(b) for b in batches), unit="img",
                   desc=f"extract[{rank}/{world_size}]", position=rank, dynamic_ncols=True)
    prefetch = _Prefetcher(batches, lambda r: _load_image(r, resize, input_format), num_workers)
    try:
        pending: List[Tuple[List[ImageRecord], List[Dict[str, Any]]]] = []
        todo_iter = iter(todo)
        current = next(todo_iter, None)
        for recs, inputs in prefetch:
            per_image = _batch_arrays(model, inputs, features, dtype)
            pending.append((recs, per_image))
            if bar is not None:
                bar.update(len(recs))
            shard_recs = records[current * shard_size:(current + 1) * shard_size]
            if sum(len(r) for r, _ in pending) == len(shard_recs):
                _commit(out, current, [r for rs, _ in pending for r in rs],
                        [d for _, ds in pending for d in ds])
                pending = []
                current = next(todo_iter, None)
    finally:
        prefetch.close()
        if bar is not None:
            bar.close()

    entries = [_shard_done(out, k, verify=False) for k in mine]
    if any(e is None for e in entries):
        raise RuntimeError(f"Shards {[k for k, e in zip(mine, entries) if e is None]} are not complete.")
    _finish(out, settings, num_shards, rank, world_size)
    return {**settings, "shards": entries}


def _commit(out: Path, k: int, records: List[ImageRecord], per_image: List[Dict[str, Any]]) -> None:
    arrays = _shard_arrays(records, per_image)
    name = _shard_name(k)
    size, digest = write_npz(out / f"{name}.npz", arrays, _shard=k)
    _fault("before-json", k)
    entry = {
        "shard": k, "file": f"{name}.npz", "bytes": size, "sha256": digest,
        "image_index": [r.index for r in records], "image_id": [r.id for r in records],
        "num_detections": ([int(len(d["det/boxes"])) for d in per_image]
                           if "det/boxes" in per_image[0] else None),
        "arrays": {n: [list(a.shape), a.dtype.str] for n, a in arrays.items()
                   if not n.startswith("fpn/")},
    }
    _write_json(out / f"{name}.json", entry)


def _finish(out: Path, settings: Dict[str, Any], num_shards: int, rank: int, world_size: int) -> None:
    """Write manifest.json once every shard is done (rank 0, after the other ranks)."""
    dist = world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
    if dist:
        torch.distributed.barrier()
    if rank == 0:
        entries = [_shard_done(out, k, verify=False) for k in range(num_shards)]
        if all(e is not None for e in entries):
            _write_json(out / "manifest.json", {**settings, "shards": entries})
    if dist:
        torch.distributed.barrier()


# -- reading -------------------------------------------------------------------------------------

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
        self.manifest: Dict[str, Any] = json.loads(path.read_text())

    def __len__(self) -> int:
        return len(self.manifest["shards"])

    def shard(self, k: int) -> Dict[str, np.ndarray]:
        return read_npz(self.root / self.manifest["shards"][k]["file"])

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
