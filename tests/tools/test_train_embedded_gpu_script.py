"""tools/train_embedded_gpu.sh, the one prepared GPU training run of the embedded model: it parses,
and without a CUDA device it stops at once (exit 2) without installing or training anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "train_embedded_gpu.sh"


def test_script_parses():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_without_cuda_it_stops_before_installing(tmp_path):
    import torch

    if torch.cuda.is_available():  # the GPU path is the script's own job, not this test's
        return
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "No CUDA device" in r.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no install log, no run
