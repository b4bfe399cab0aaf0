"""Command line: ``python -m workbench.extract --config-file CFG --input DIR|COCO.json --output OUT``.

Examples::

    python -m workbench.extract --config-file mask_rcnn.yaml --weights model_final.pkl \\
        --input photos/ --output feats/ --features detections fpn_pooled
    torchrun --nproc_per_node 2 -m workbench.extract ... (same arguments; one slice per rank)

Run the same command again after an interruption: finished shards are kept, and so are the
batches of an unfinished shard saved every ``--checkpoint-seconds`` (and on SIGTERM / Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import List, Optional

import torch

from .core import FEATURES, ExtractionFolderError, FolderBusyError, extract


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench.extract",
                                description="Write per-image / per-detection features of a "
                                            "detector over a dataset (npz shards + JSON manifest).")
    p.add_argument("--config-file", required=True,
                   help="a config .yaml, or a model-zoo name such as "
                        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    p.add_argument("--weights", default=None, help="checkpoint to load (default: MODEL.WEIGHTS)")
    p.add_argument("--input", required=True, help="folder of images or COCO .json")
    p.add_argument("--image-root", default=None, help="folder a COCO json's file names are relative to")
    p.add_argument("--output", required=True, help="output folder (resumed if it exists)")
    p.add_argument("--features", nargs="+", default=["detections"], choices=FEATURES)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--float16", action="store_true", help="store feature maps / embeddings as float16")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda (default: MODEL.DEVICE; under "
                                                   "torchrun with CUDA, cuda:LOCAL_RANK)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads")
    p.add_argument("--checkpoint-seconds", type=float, default=5.0,
                   help="save the finished batches of the shard in progress at least this often, "
                        "so a killed run loses little work (0: after every batch)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides, KEY VALUE pairs (last argument)")
    return p


def _load_cfg(path: str, opts: List[str]):
    from workbench.config import get_cfg

    if os.path.isfile(path):
        cfg = get_cfg()
        cfg.merge_from_file(path)
    else:
        from workbench.model_zoo import embedded_weights_path, get_config

        # workbench's own models ship their weights: use them (nothing to download). Other zoo
        # names keep the YAML's MODEL.WEIGHTS, as detectron2's get_config does.
        cfg = get_config(path, trained=embedded_weights_path(path) is not None)
    if opts:
        cfg.merge_from_list(opts)
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler's preemption, torchrun stopping its workers) ends the run through an
    # exception, so the finished batches of the shard in progress are saved first.
    previous = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    try:
        return _main(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    from workbench.checkpoint import DetectionCheckpointer
    from workbench.modeling import build_model

    cfg = _load_cfg(args.config_file, args.opts)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = args.device or cfg.MODEL.DEVICE
    if device.startswith("cuda") and world_size > 1 and ":" not in device:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    cfg.MODEL.DEVICE = device
    initialized_here = False
    if world_size > 1 and torch.distributed.is_available() and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")  # only barriers are needed
        initialized_here = True
    config_name = (os.path.abspath(args.config_file) if os.path.isfile(args.config_file)
                   else args.config_file)
    try:
        model = build_model(cfg).eval()
        weights = args.weights if args.weights is not None else cfg.MODEL.WEIGHTS
        if weights:
            DetectionCheckpointer(model).load(weights)
        else:
            logging.getLogger(__name__).warning(
                "No weights: neither --weights nor MODEL.WEIGHTS of %s is set, so the features come "
                "from a randomly initialised model.", args.config_file)
        manifest = extract(
            model, args.input, args.output, features=args.features, batch_size=args.batch_size,
            shard_size=args.shard_size, min_size=cfg.INPUT.MIN_SIZE_TEST,
            max_size=cfg.INPUT.MAX_SIZE_TEST, input_format=cfg.INPUT.FORMAT,
            float_dtype="float16" if args.float16 else "float32", image_root=args.image_root,
            rank=rank, world_size=world_size, num_workers=args.workers,
            progress=not args.no_progress,
            model_info={"config_file": config_name, "weights": weights or "", "opts": list(args.opts)},
            checkpoint_seconds=args.checkpoint_seconds,
        )
    except (FolderBusyError, ExtractionFolderError) as e:
        print(f"[rank {rank}/{world_size}] error: {e}", file=sys.stderr)
        return 1
    finally:
        if initialized_here:
            torch.distributed.destroy_process_group()
    done, run = len(manifest["shards"]), manifest["run"]
    print(f"[rank {rank}/{world_size}] {done} shards in {args.output} ({run['images_computed']} "
          f"images computed, {run['images_from_partial_shards']} taken from partial shards)",
          file=sys.stderr)
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
