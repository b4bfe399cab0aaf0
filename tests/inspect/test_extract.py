"""workbench.extract: shards + manifest without pickle, resumable after a kill, sharded over ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inspect_fixtures import tiny_cfg
from workbench import inspect as wi
from workbench.extract import extract, list_images, load_extracted, read_npz
from workbench.extract.core import _load_image
from workbench.data import transforms as T
from workbench.modeling import build_model

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["detections", "det_logits", "fpn_pooled"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    torch.manual_seed(0)
    cfg = tiny_cfg("faster_rcnn_fpn", ["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 100])
    model = build_model(cfg).eval()
    weights = root / "weights.pth"
    torch.save(model.state_dict(), weights)
    cfg_path = root / "config.yaml"
    cfg_path.write_text(cfg.dump())
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    sizes = [(90, 120), (120, 90), (64, 64), (100, 150), (80, 80), (70, 140), (128, 96)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    info = {"config_file": str(cfg_path), "weights": str(weights), "opts": []}
    kwargs = dict(features=FEATURES, batch_size=2, shard_size=4, min_size=64, max_size=100,
                  input_format="BGR", progress=False, model_info=info)
    out = root / "uninterrupted"
    extract(model, images, out, **kwargs)
    return {"root": root, "model": model, "cfg": cfg, "images": images, "weights": weights,
            "cfg_path": cfg_path, "kwargs": kwargs, "out": out}


def _cli(s, out, *extra, env=None, launcher=()):
    cmd = [sys.executable, *launcher, "-m", "workbench.extract", "--config-file", str(s["cfg_path"]),
           "--weights", str(s["weights"]), "--input", str(s["images"]), "--output", str(out),
           "--features", *FEATURES, "--batch-size", "2", "--shard-size", "4", "--threads", "1",
           "--workers", "1", "--no-progress", *extra]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=180)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def test_shards_hold_what_the_trace_gives(setup):
    ds = load_extracted(setup["out"])
    assert len(ds) == 2 and ds.manifest["num_images"] == 7
    arrays = read_npz(setup["out"] / "shard-00001.npz")  # np.load(allow_pickle=False) inside
    assert arrays["image_id"].tolist() == ["img4.png", "img5.png", "img6.png"]
    assert arrays["image_size"].tolist() == [[80, 80], [70, 140], [128, 96]]
    # Recompute the first batch of shard 1 with a trace: same detections, same embeddings.
    records = list_images(setup["images"])[4:6]
    resize = T.ResizeShortestEdge([64, 64], 100)
    inputs = [_load_image(r, resize, "BGR") for r in records]
    tr = wi.trace(setup["model"], inputs)
    for row in range(2):
        p = tr.provenance(row)
        sel = arrays["det/image"] == row
        assert sel.sum() == len(p) > 0
        np.testing.assert_array_equal(arrays["det/boxes"][sel], p.boxes.numpy())
        np.testing.assert_array_equal(arrays["det/embeddings"][sel], p.embeddings.numpy())
        np.testing.assert_array_equal(arrays["det/logits"][sel], p.logits.numpy())
        np.testing.assert_array_equal(arrays["det/classes"][sel], p.classes.numpy())
        h, w = tr.preprocess.image_sizes[row]
        fmap = tr.backbone.features["p3"][row, :, : -(-h // 8), : -(-w // 8)]
        np.testing.assert_allclose(arrays["fpn_pooled/p3"][row], fmap.mean(dim=(1, 2)).numpy())
    emb = ds.concat("det/embeddings")
    assert emb.shape[1] == 32 and len(emb) == len(ds.concat("det/image"))


def test_coco_json_source_and_settings_check(setup, tmp_path):
    coco = {"images": [{"id": 7, "file_name": "img2.png"}, {"id": 3, "file_name": "img0.png"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    recs = list_images(path, image_root=str(setup["images"]))
    assert [r.id for r in recs] == ["7", "3"]
    kwargs = {**setup["kwargs"], "features": ["fpn_pooled", "fpn"]}
    extract(setup["model"], path, tmp_path / "out", image_root=str(setup["images"]), **kwargs)
    arrays = load_extracted(tmp_path / "out").shard(0)
    assert arrays["image_id"].tolist() == ["7", "3"] and "det/boxes" not in arrays
    assert arrays["fpn/p2/1"].shape[0] == 16
    with pytest.raises(ValueError, match="other settings"):
        extract(setup["model"], path, tmp_path / "out", image_root=str(setup["images"]),
                **{**kwargs, "batch_size": 4})


def test_killed_extraction_resumes_to_the_same_files(setup):
    out = setup["root"] / "killed"
    # Killed while writing shard 1: shard 0 is done, shard 1 is a half-written temporary file.
    r = _cli(setup, out, env={"WORKBENCH_EXTRACT_FAULT": "npz-partial:1"})
    assert r.returncode == 17, r.stderr[-2000:]
    assert (out / "shard-00000.json").is_file() and (out / "shard-00001.npz.tmp").is_file()
    assert not (out / "shard-00001.json").exists() and not (out / "manifest.json").exists()
    # A shard file without its manifest entry (killed between the two renames) is not counted.
    os.replace(out / "shard-00001.npz.tmp", out / "shard-00001.npz")
    first = (out / "shard-00000.npz").stat().st_mtime_ns
    extract(setup["model"], setup["images"], out, **setup["kwargs"])
    assert (out / "shard-00000.npz").stat().st_mtime_ns == first, "a finished shard was redone"
    assert _files(out) == _files(setup["out"])


def _rank_main(rank, argv, port):
    # What torchrun gives each worker: its rank and the rendezvous address, in the environment.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import workbench.extract.core as core
    from workbench.extract.__main__ import main

    commit, finish = core._commit, core._finish
    log = Path(argv[argv.index("--output") + 1] + f".rank{rank}.log")

    def record_commit(out, k, *args):
        with open(log, "a") as f:
            f.write(f"shard {k}\n")
        return commit(out, k, *args)

    def record_finish(*args):
        dist = torch.distributed
        with open(log, "a") as f:
            f.write(f"gloo {dist.is_initialized() and dist.get_backend()} {dist.get_world_size()}\n")
        return finish(*args)

    core._commit, core._finish = record_commit, record_finish  # this forked process only
    assert main(argv) == 0


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_with_gloo_write_the_same_shards(setup):
    # The CLI's main() in two forked ranks, as under `torchrun --nproc_per_node 2` (forking
    # skips re-importing torch; the launcher itself only sets the variables above).
    out = setup["root"] / "two_ranks"
    argv = ["--config-file", str(setup["cfg_path"]), "--weights", str(setup["weights"]),
            "--input", str(setup["images"]), "--output", str(out), "--features", *FEATURES,
            "--batch-size", "2", "--shard-size", "4", "--threads", "1", "--workers", "1",
            "--no-progress"]
    ctx = torch.multiprocessing.start_processes(_rank_main, args=(argv, _free_port()), nprocs=2,
                                                join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish within 120 s")
    for rank in (0, 1):  # each rank did its own slice (shard k on rank k % 2) in a gloo group
        log = Path(f"{out}.rank{rank}.log").read_text().splitlines()
        assert log == [f"shard {rank}", "gloo gloo 2"], log
    assert _files(out) == _files(setup["out"])


def test_images_without_detections_extract_to_empty_rows(setup, tmp_path):
    # A model that keeps no detection at all: every image is empty, none is an error.
    torch.manual_seed(0)
    cfg = tiny_cfg("faster_rcnn_fpn", ["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 100,
                                       "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.0])
    model = build_model(cfg).eval()
    kwargs = {k: v for k, v in setup["kwargs"].items() if k != "model_info"}
    extract(model, setup["images"], tmp_path / "empty", **kwargs)
    ds = load_extracted(tmp_path / "empty")
    assert ds.manifest["num_images"] == 7
    assert len(ds.concat("det/embeddings")) == 0 and ds.concat("det/embeddings").shape[1] == 32
    assert len(ds.concat("fpn_pooled/p3")) == 7
