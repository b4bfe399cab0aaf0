"""workbench.extract: shards + manifest without pickle, resumable after a kill, sharded over ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
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
from workbench.extract import (ExtractionFolderError, FolderBusyError, extract, list_images,
                               load_extracted, read_npz)
from workbench.extract.core import _load_image
from workbench.extract.locking import FileLock
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


def _cli_args(s, out, *extra, env=None, launcher=()):
    cmd = [sys.executable, *launcher, "-m", "workbench.extract", "--config-file", str(s["cfg_path"]),
           "--weights", str(s["weights"]), "--input", str(s["images"]), "--output", str(out),
           "--features", *FEATURES, "--batch-size", "2", "--shard-size", "4", "--threads", "1",
           "--workers", "1", "--no-progress", *extra]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return cmd, full_env


def _cli(s, out, *extra, env=None, launcher=()):
    cmd, full_env = _cli_args(s, out, *extra, env=env, launcher=launcher)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=180)


def _paused_cli(s, out, point, *extra):
    """The CLI, stopped (alive, holding its locks) at fault point ``point``; stderr in a file."""
    cmd, env = _cli_args(s, out, *extra, env={"WORKBENCH_EXTRACT_FAULT": f"pause@{point}"})
    log = Path(f"{out}.stderr")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 120
    while f"paused at {point}" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run did not pause at {point}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, log


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


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.endswith((".tmp", ".lock")) or ".part-" in p.name)


def test_second_writer_stops_with_a_clear_error_and_sigterm_keeps_the_work(setup):
    out = setup["root"] / "two_writers"
    # Writer A stops after the 2nd batch of shard 0 (images 0-3 computed, none saved yet),
    # holding the folder lock and shard 0's lock.
    first, _ = _paused_cli(setup, out, "batch-done:0.2", "--checkpoint-seconds", "1000")
    try:
        second = _cli(setup, out)  # writer B: another real process on the same folder
        assert second.returncode == 1, second.stderr[-2000:]
        msg = " ".join(second.stderr.split())
        assert f"{out} is being written by another extraction: pid {first.pid} on host" in msg
        assert "(lone writer)" in msg and "run this command again: it resumes" in msg, msg
        assert "Traceback" not in second.stderr
        assert not (out / "shard-00000.npz").exists() and not list(out.glob("*.tmp"))
        # SIGTERM (a scheduler's preemption): A saves the batches it finished, releases its locks.
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        first.kill()
    assert _leftovers(out) == ["shard-00000.part-000000.npz"]  # rows 0-3: all of shard 0
    manifest = extract(setup["model"], setup["images"], out, **setup["kwargs"])
    assert manifest["run"] == {"images_computed": 3, "images_from_partial_shards": 4}
    assert _files(out) == _files(setup["out"])  # identical, and no lock / part / temporary file


def test_kill_9_mid_shard_redoes_at_most_one_batch(setup):
    out = setup["root"] / "kill9"
    # Saved after every batch; stopped when the 2nd batch of shard 0 (images 2-3) is computed but
    # not yet saved, then killed for real: the 4 images computed, 2 of them on disk.
    proc, _ = _paused_cli(setup, out, "batch-done:0.2", "--checkpoint-seconds", "0")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _leftovers(out) == ["shard-00000.lock", "shard-00000.part-000000.npz", "writer.lock"]
    manifest = extract(setup["model"], setup["images"], out, **setup["kwargs"])
    run = manifest["run"]
    assert run == {"images_computed": 5, "images_from_partial_shards": 2}
    assert 4 - run["images_from_partial_shards"] == 2  # redone: the one unsaved batch
    assert _files(out) == _files(setup["out"])


def test_sharded_runs_and_a_lone_writer_keep_apart(setup, tmp_path):
    out = tmp_path / "ranks"
    out.mkdir()
    kw = setup["kwargs"]
    lone = FileLock(out / "writer.lock", role="lone writer")  # as a running lone extraction holds it
    assert lone.acquire()
    with pytest.raises(FolderBusyError, match=r"being written by another extraction: pid "
                       rf"{os.getpid()} on host .* since .* \(lone writer\)"):
        extract(setup["model"], setup["images"], out, rank=0, world_size=2, **kw)
    lone.release()
    extract(setup["model"], setup["images"], out, rank=0, world_size=2, **kw)  # ranks share it
    # Shard 1 held by some other sharded run (another world size): rank 1 of 2 stops, clearly.
    other = FileLock(out / "shard-00001.lock", role="rank 0 of 3")
    assert other.acquire()
    with pytest.raises(FolderBusyError, match=r"shard-00001 is being written by another process: "
                                              rf"pid {os.getpid()} .*\(rank 0 of 3\)"):
        extract(setup["model"], setup["images"], out, rank=1, world_size=2, **kw)
    other.release()
    assert extract(setup["model"], setup["images"], out, rank=1, world_size=2, **kw)["run"] == {
        "images_computed": 3, "images_from_partial_shards": 0}
    assert not (out / "manifest.json").exists()  # rank 1 does not write it; a lone rerun does
    assert extract(setup["model"], setup["images"], out, **kw)["run"]["images_computed"] == 0
    assert _files(out) == _files(setup["out"])


@pytest.mark.parametrize("text, problem", [
    ('{"format": "workbench-extract/1", "feat', "is not valid JSON"),
    ("[1, 2]", "holds a list, not a JSON object"),
    ('{"format": "workbench-extract/1"}', "lacks ['features', 'batch_size'"),
])
def test_damaged_config_json_is_named(setup, tmp_path, text, problem):
    out = tmp_path / "feats"
    shutil.copytree(setup["out"], out)
    (out / "config.json").write_text(text)
    with pytest.raises(ExtractionFolderError) as e:
        extract(setup["model"], setup["images"], out, **setup["kwargs"])
    msg = str(e.value)
    assert msg.startswith(f"{out / 'config.json'} {problem}")
    assert f"folder {out} is incomplete or damaged" in msg
    assert f"start over (delete {out} or use another output folder)" in msg
    assert not list(out.glob("*.lock"))


@pytest.mark.parametrize("damage, problem", [
    (lambda m: m.write_text(m.read_text()[:200]), "is not valid JSON"),
    (lambda m: m.write_text(json.dumps({**json.loads(m.read_text()), "shards": [{"bytes": 1}]})),
     "has a damaged 'shards' list"),
    (lambda m: m.write_text(json.dumps({k: v for k, v in json.loads(m.read_text()).items()
                                        if k != "shards"})), "lacks ['shards']"),
])
def test_damaged_manifest_json_is_named_and_a_rerun_repairs_it(setup, tmp_path, damage, problem):
    out = tmp_path / "feats"
    shutil.copytree(setup["out"], out)
    damage(out / "manifest.json")
    with pytest.raises(ExtractionFolderError) as e:
        load_extracted(out)
    msg = str(e.value)
    assert msg.startswith(f"{out / 'manifest.json'} {problem}") and "incomplete or damaged" in msg
    assert "Run the same extraction again to repair it" in msg
    run = extract(setup["model"], setup["images"], out, **setup["kwargs"])["run"]
    assert run["images_computed"] == 0
    assert _files(out) == _files(setup["out"]) and len(load_extracted(out)) == 2


def test_truncated_shard_is_named_and_a_rerun_redoes_it(setup, tmp_path):
    out = tmp_path / "feats"
    shutil.copytree(setup["out"], out)
    with open(out / "shard-00001.npz", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ExtractionFolderError, match=r"shard-00001.npz has 1000 bytes, but .*manifest"
                                                    r".json says \d+: the extraction folder is damaged"):
        load_extracted(out).shard(1)
    run = extract(setup["model"], setup["images"], out, **setup["kwargs"])["run"]
    assert run["images_computed"] == 3
    assert _files(out) == _files(setup["out"])


def _zero_fill(path):
    path.write_bytes(b"\0" * path.stat().st_size)


def _flip_middle(path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(255 - b for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_zero_fill, _flip_middle], ids=["zeros", "flipped-bytes"])
def test_corrupt_shard_of_the_right_size_is_named_and_a_rerun_redoes_it(setup, tmp_path, damage):
    out = tmp_path / "feats"
    shutil.copytree(setup["out"], out)
    shard = out / "shard-00001.npz"
    damage(shard)
    assert shard.stat().st_size == (setup["out"] / "shard-00001.npz").stat().st_size
    with pytest.raises(ExtractionFolderError) as e:
        load_extracted(out).shard(1)
    msg = str(e.value)
    assert msg.startswith(f"{shard} is damaged"), msg
    assert "Run the same extraction again to repair it" in msg
    assert "allow_pickle" not in msg
    with pytest.raises(ExtractionFolderError, match="shard-00001.npz is damaged"):
        read_npz(shard)
    run = extract(setup["model"], setup["images"], out, **setup["kwargs"])["run"]
    assert run["images_computed"] == 3
    assert _files(out) == _files(setup["out"])
