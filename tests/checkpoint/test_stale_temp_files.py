"""Temporary files of killed saves are deleted on the next save or load, never those of a save
still running, never other files, and never counted as checkpoints."""

import os
import subprocess
import sys
import time
import uuid

import pytest
import torch
from torch import nn

from workbench.checkpoint import DetectionCheckpointer
from workbench.utils import atomic_files
from workbench.utils.atomic_files import _host_tag, is_temp_file, remove_stale_temp_files


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def temp_name(target: str, pid=None, host=None) -> str:
    if pid is None:  # the older form, without host and pid
        return f".{target}.{uuid.uuid4().hex}.tmp"
    return f".{target}.{host or _host_tag()}-{pid}-{uuid.uuid4().hex}.tmp"


def make(folder, name, age_s=0.0, size=1000):
    path = folder / name
    path.write_bytes(b"\0" * size)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def checkpointer(folder, **kwargs):
    return DetectionCheckpointer(nn.Linear(2, 2), save_dir=str(folder), **kwargs)


@pytest.mark.parametrize("trigger", ["save", "load", "resume_or_load"])
def test_temp_files_of_dead_writers_are_removed(tmp_path, trigger):
    ckpt = checkpointer(tmp_path)
    ckpt.save("model_0000000")
    pid = dead_pid()
    age = atomic_files.DEAD_WRITER_AGE_S + 10
    stale = [make(tmp_path, temp_name("model_0000001.pth", pid), age_s=age),
             make(tmp_path, temp_name("last_checkpoint", pid), age_s=age)]
    if trigger == "save":
        ckpt.save("model_0000002")
    elif trigger == "load":
        ckpt.load(str(tmp_path / "model_0000000.pth"))
    else:
        ckpt.resume_or_load("", resume=True)
    assert not any(p.exists() for p in stale)
    expected = {"last_checkpoint", "model_0000000.pth"} | ({"model_0000002.pth"} if trigger == "save" else set())
    assert set(os.listdir(tmp_path)) == expected


def test_temp_files_of_running_writers_are_kept(tmp_path, live_process):
    kept = [make(tmp_path, temp_name("model_0000001.pth", live_process.pid)),
            make(tmp_path, temp_name("model_0000002.pth", os.getpid())),
            # Another machine's writer (shared file system), and the older naming: by age.
            make(tmp_path, temp_name("model_0000003.pth", 12345, host="0badcafe"), age_s=60),
            make(tmp_path, temp_name("model_0000004.pth"), age_s=60)]
    checkpointer(tmp_path).save("model_0000005")
    assert all(p.exists() for p in kept)


def test_recent_temp_files_of_pids_not_seen_here_are_kept(tmp_path):
    # A container sharing this volume and host name, in its own pid namespace, is saving:
    # its pid means nothing here (dead, or another process), but its file keeps changing.
    age = atomic_files.DEAD_WRITER_AGE_S - 20
    kept = [make(tmp_path, temp_name("model_0000001.pth", dead_pid())),
            make(tmp_path, temp_name("last_checkpoint", dead_pid()), age_s=age)]
    checkpointer(tmp_path).save("model_0000002")
    assert all(p.exists() for p in kept)
    # Once unmodified for DEAD_WRITER_AGE_S, its writer has stopped: the files go.
    for p in kept:
        t = time.time() - atomic_files.DEAD_WRITER_AGE_S - 10
        os.utime(p, (t, t))
    checkpointer(tmp_path).save("model_0000003")
    assert not any(p.exists() for p in kept)


def test_old_temp_files_of_unknown_writers_are_removed(tmp_path):
    age = atomic_files.STALE_TEMP_AGE_S + 60
    stale = [make(tmp_path, temp_name("model_0000003.pth", 12345, host="0badcafe"), age_s=age),
             make(tmp_path, temp_name("model_0000004.pth"), age_s=age)]  # as before this fix
    checkpointer(tmp_path).save("model_0000005")
    assert not any(p.exists() for p in stale)


def test_a_reused_pid_does_not_keep_a_stale_file(tmp_path, live_process):
    # Written an hour before the process that now has this pid started: not its file.
    path = make(tmp_path, temp_name("model_0000001.pth", live_process.pid), age_s=3600)
    checkpointer(tmp_path).save("model_0000002")
    assert not path.exists()


def test_only_the_checkpointers_own_temp_files_are_touched(tmp_path):
    pid = dead_pid()
    old = atomic_files.STALE_TEMP_AGE_S + 60
    others = [make(tmp_path, temp_name("metrics.json", pid), age_s=old),  # not a checkpoint
              make(tmp_path, f".model_0000001.pth.{pid}.tmp", age_s=old),  # not our naming
              make(tmp_path, "model.tmp", age_s=old),
              make(tmp_path, "notes.txt", age_s=old)]
    sub = tmp_path / "sub"
    sub.mkdir()
    others.append(make(sub, temp_name("model_0000001.pth", pid), age_s=old))  # not save_dir
    checkpointer(tmp_path).save("model_0000002")
    assert all(p.exists() for p in others)


def test_non_saving_processes_leave_temp_files_alone(tmp_path):
    path = make(tmp_path, temp_name("model_0000001.pth", dead_pid()))
    ckpt = checkpointer(tmp_path, save_to_disk=False)
    torch.save({"model": ckpt.model.state_dict()}, tmp_path / "w.pth")
    ckpt.save("x")
    ckpt.load(str(tmp_path / "w.pth"))
    assert path.exists()


def test_temp_files_never_count_as_checkpoints(tmp_path):
    ckpt = checkpointer(tmp_path)
    pid = dead_pid()
    make(tmp_path, temp_name("model_0000009.pth", pid))
    make(tmp_path, temp_name("last_checkpoint", pid))
    assert not ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == ""
    assert ckpt.get_all_checkpoint_files() == []

    (tmp_path / "last_checkpoint").write_text(temp_name("model_0000009.pth", pid))
    assert not ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == ""
    assert ckpt.resume_or_load("", resume=True) == {}  # from scratch, not from a temp file

    ckpt.save("model_0000001")
    assert ckpt.get_all_checkpoint_files() == [str(tmp_path / "model_0000001.pth")]
    assert ckpt.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")


def test_temp_names_carry_host_and_pid(tmp_path, monkeypatch):
    seen = []
    real_open = open

    def spy(path, mode="r", *args, **kwargs):
        if "x" in mode:
            seen.append(os.path.basename(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    checkpointer(tmp_path).save("model_0000001")
    assert len(seen) == 2 and all(is_temp_file(n) for n in seen)
    assert all(f".{_host_tag()}-{os.getpid()}-" in n for n in seen), seen
    assert remove_stale_temp_files(str(tmp_path), lambda t: True) == []
