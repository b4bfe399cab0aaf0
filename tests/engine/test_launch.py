"""Two CPU processes (gloo) train with DistributedDataParallel for a few iterations through
``launch`` and ``DefaultTrainer``: both ranks end with identical weights, see disjoint images,
agree on collectives, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from workbench.engine.launch import _find_free_port

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from workbench.config import get_cfg
    from workbench.data import DatasetCatalog, MetadataCatalog
    from workbench.engine import DefaultTrainer, launch
    from workbench.utils import comm
    from workbench.utils.env import seed_all_rng

    class RecordingTrainer(DefaultTrainer):
        seen = []

        @classmethod
        def build_train_loader(cls, cfg):
            loader = super().build_train_loader(cfg)

            def record():
                for batch in loader:
                    cls.seen.extend(d["image_id"] for d in batch)
                    yield batch
            return record()

    def main(cfg_file, dicts_file, out_dir):
        with open(dicts_file) as f:
            dicts = json.load(f)
        DatasetCatalog.register("rects", lambda: dicts)
        MetadataCatalog.get("rects").set(thing_classes=["red", "blue"])
        cfg = get_cfg()
        cfg.merge_from_file(cfg_file)
        rank = comm.get_rank()
        seed_all_rng(cfg.SEED + rank)  # different per rank, as default_setup does
        trainer = RecordingTrainer(cfg)
        model = trainer.model
        initial = {k: v.clone() for k, v in model.module.state_dict().items()}
        trainer.resume_or_load(resume=False)
        trainer.train()
        state = model.module.state_dict()
        torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
        reduced = comm.reduce_dict({"x": torch.tensor(float(rank + 1))})
        info = {
            "world_size": comm.get_world_size(), "rank": rank, "local_rank": comm.get_local_rank(),
            "is_ddp": type(model).__name__, "seen": RecordingTrainer.seen,
            "all_gather": comm.all_gather(rank * 10), "gather": comm.gather(rank),
            "seed": comm.shared_random_seed(), "reduced": float(reduced["x"]) if rank == 0 else None,
            "changed": any(not torch.equal(initial[k], state[k]) for k in initial),
            "storage_has_loss": "total_loss" in trainer.storage.latest(),
        }
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(info, f)

    if __name__ == "__main__":
        launch(main, 2, dist_url=sys.argv[4], args=tuple(sys.argv[1:4]))
''')


def test_two_gloo_processes_end_with_identical_weights(rect_dataset, make_tiny_cfg, tmp_path):
    from workbench.data import DatasetCatalog

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cfg = make_tiny_cfg("DATASETS.TRAIN", ("rects",), "OUTPUT_DIR", str(out_dir), "SOLVER.MAX_ITER", 3,
                        "SOLVER.CHECKPOINT_PERIOD", 100, "SOLVER.IMS_PER_BATCH", 2,
                        "DATALOADER.ASPECT_RATIO_GROUPING", False)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    dicts_file = tmp_path / "dicts.json"
    dicts_file.write_text(json.dumps(DatasetCatalog.get(rect_dataset)))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script), str(cfg_file), str(dicts_file), str(out_dir),
         f"tcp://127.0.0.1:{_find_free_port()}"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]

    infos = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(infos):
        assert (info["world_size"], info["rank"], info["local_rank"]) == (2, r, r)
        assert info["is_ddp"] == "DistributedDataParallel"
        assert info["changed"]
        assert info["all_gather"] == [0, 10]
        assert len(info["seen"]) == 3  # 1 image per rank per iteration (IMS_PER_BATCH 2 over 2 ranks)
    assert infos[0]["seed"] == infos[1]["seed"]
    assert infos[0]["gather"] == [0, 1] and infos[1]["gather"] == []
    assert infos[0]["reduced"] == 1.5  # (1 + 2) / 2
    # The shared sampler gives the ranks alternate elements of one stream.
    assert infos[0]["seen"] != infos[1]["seen"]
    # Only rank 0 records metrics and writes files.
    assert infos[0]["storage_has_loss"] and not infos[1]["storage_has_loss"]
    assert (out_dir / "model_final.pth").exists()
    with open(out_dir / "metrics.json") as f:
        assert [json.loads(line)["iteration"] for line in f] == [2]

    w0 = torch.load(out_dir / "rank0.pt", weights_only=True)
    w1 = torch.load(out_dir / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not different, f"ranks disagree on {different[:5]}"
    final = torch.load(out_dir / "model_final.pth", weights_only=True)["model"]
    for k in w0:
        assert torch.equal(final[k], w0[k]), k


PROBE = textwrap.dedent('''
    import json, os, sys
    import torch
    from workbench.engine import launch
    from workbench.utils import comm

    def main(out_dir):
        info = {"rank": comm.get_rank(), "world_size": comm.get_world_size(),
                "local_rank": comm.get_local_rank(), "local_size": comm.get_local_size(),
                "all_gather": comm.all_gather(comm.get_rank() * 10)}
        with open(os.path.join(out_dir, f"probe{comm.get_rank()}.json"), "w") as f:
            json.dump(info, f)

    if __name__ == "__main__":
        mode, out_dir = sys.argv[1], sys.argv[2]
        if mode == "torchrun":
            launch(main, 2, args=(out_dir,))
        else:  # one process on each of two "machines"
            launch(main, 1, num_machines=2, machine_rank=int(sys.argv[3]), dist_url=sys.argv[4],
                   args=(out_dir,))
''')


def _run_two(tmp_path, commands_and_envs):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    procs = [subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for argv, env in commands_and_envs]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return [json.loads((tmp_path / f"probe{r}.json").read_text()) for r in range(2)]


def test_launch_joins_the_group_torchrun_describes(tmp_path):
    """Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set), launch joins that group instead of
    spawning: two processes started like torchrun's workers see one world of two."""
    port = _find_free_port()
    base = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    runs = [(["torchrun", str(tmp_path)], dict(base, RANK=str(r), LOCAL_RANK=str(r))) for r in range(2)]
    infos = _run_two(tmp_path, runs)
    for r, info in enumerate(infos):
        assert (info["rank"], info["world_size"], info["local_rank"], info["local_size"]) == (r, 2, r, 2)
        assert info["all_gather"] == [0, 10]


def test_launch_across_two_machines_ranks_by_machine(tmp_path):
    """num_machines=2 with one process each: the global rank is machine_rank * per-machine + local."""
    url = f"tcp://127.0.0.1:{_find_free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    runs = [(["machines", str(tmp_path), str(m), url], env) for m in range(2)]
    infos = _run_two(tmp_path, runs)
    for m, info in enumerate(infos):
        assert (info["rank"], info["world_size"], info["local_rank"], info["local_size"]) == (m, 2, 0, 1)
        assert info["all_gather"] == [0, 10]
