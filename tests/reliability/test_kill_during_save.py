"""``kill -9`` at random moments of a process that keeps saving checkpoints: no checkpoint is
ever half-written, the last complete one is never lost, and the next save removes what the
killed one left behind."""

import multiprocessing
import os
import random
import select
import signal
import time

import torch
from torch import nn

from workbench.checkpoint import DetectionCheckpointer
from workbench.utils.atomic_files import _TEMP_RE, DEAD_WRITER_AGE_S, is_temp_file

KILLS = 10


def make_model():
    return nn.Sequential(nn.Linear(512, 1024), nn.Linear(1024, 512))  # 4 MiB of weights


def saver(save_dir: str, fd: int) -> None:
    """Resumes from save_dir, then saves model_<it>.pth forever (keeping the last two), and
    writes each iteration to ``fd`` once its save has returned."""
    model = make_model()
    ckpt = DetectionCheckpointer(model, save_dir=save_dir)
    start = ckpt.resume_or_load("", resume=True).get("iteration", -1) + 1
    for it in range(start, start + 100000):
        with torch.no_grad():
            model[0].bias.fill_(it)
        ckpt.save(f"model_{it:07d}", iteration=it)
        os.write(fd, f"{it}\n".encode())
        old = os.path.join(save_dir, f"model_{it - 2:07d}.pth")
        if os.path.exists(old):
            os.remove(old)


def read_lines(fd: int, timeout: float):
    """Whatever the child wrote (one int per line), waiting up to ``timeout`` for the first."""
    data = b""
    ready, _, _ = select.select([fd], [], [], timeout)
    while ready:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
        ready, _, _ = select.select([fd], [], [], 0)
    return [int(x) for x in data.split(b"\n") if x.strip()]


def temp_files(folder):
    return [n for n in os.listdir(folder) if is_temp_file(n)]


def age_temp_files(folder):
    """Makes the killed writer's temporary files look unmodified for longer than
    DEAD_WRITER_AGE_S (a dead pid alone is not enough: it may be another pid namespace's)."""
    t = time.time() - DEAD_WRITER_AGE_S - 10
    for name in temp_files(folder):
        os.utime(os.path.join(folder, name), (t, t))


def check_checkpoints(folder, last_done: int):
    names = sorted(n for n in os.listdir(folder) if n.startswith("model_") and n.endswith(".pth"))
    for name in names:  # every checkpoint that exists is whole
        model = make_model()
        extra = DetectionCheckpointer(model).load(os.path.join(folder, name))
        it = int(name[len("model_"):-len(".pth")])
        assert extra == {"iteration": it} and torch.all(model[0].bias == it), name
    # The last save that returned is there, and last_checkpoint points at it or a newer one.
    assert f"model_{last_done:07d}.pth" in names, (last_done, names)
    # save_to_disk=False: this reader must not clean up what the next save is to clean.
    ckpt = DetectionCheckpointer(make_model(), save_dir=folder, save_to_disk=False)
    assert ckpt.has_checkpoint()
    assert ckpt.load(ckpt.get_checkpoint_file())["iteration"] >= last_done


def test_kill_9_during_saves(tmp_path):
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    folder = str(tmp_path)
    last_done = -1
    killed_mid_write = 0
    dead_pids = set()
    for _ in range(KILLS):
        r, w = os.pipe()
        child = ctx.Process(target=saver, args=(folder, w))
        child.start()
        os.close(w)
        try:
            done = read_lines(r, timeout=30)
            assert done, "the saver did not save"
            # Its first save ran after the previous kill: nothing stale may be left over
            # (the only temporary files are the live child's own).
            assert all(_TEMP_RE.match(n).group("pid") == str(child.pid) for n in temp_files(folder)), \
                (temp_files(folder), dead_pids)
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            done += read_lines(r, timeout=0)
        finally:
            if child.is_alive():
                child.kill()
                child.join()
            os.close(r)
        dead_pids.add(child.pid)
        age_temp_files(folder)
        # Resumed where the previous one stopped (one more if it was killed after a save
        # returned but before it reported it).
        assert done[0] in (last_done + 1, last_done + 2) and done == list(range(done[0], done[-1] + 1))
        last_done = done[-1]
        killed_mid_write += bool(temp_files(folder))
        check_checkpoints(folder, last_done)
    # Most kills land in a save (saving is what the child does); the cleanup was exercised.
    assert killed_mid_write >= 1

    # The next save removes every stale temporary file and leaves none of its own.
    ckpt = DetectionCheckpointer(make_model(), save_dir=folder)
    ckpt.save("model_final")
    assert temp_files(folder) == []
