"""``python -m workbench.demo`` (``make demo``) end to end on the embedded model, kept small:
one validation image, one photo, evaluation on a handful of images."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from workbench import demo


def test_demo_writes_pictures_report_and_metrics(tmp_path, capsys):
    out = tmp_path / "out"
    rc = demo.main(["--output-dir", str(out), "--val-images", "1", "--eval-images", "6",
                    "--photos", "coffee", "--dataset", "shapes_val_100"])
    assert rc == 0
    for name in ("val_0.png", "photo_coffee.png", "trace.png", "report.html", "metrics.json"):
        assert (out / name).is_file(), name
    # Nothing half-written is left behind.
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    val = np.asarray(Image.open(out / "val_0.png"))
    assert val.ndim == 3 and val.shape[1] > 2 * val.shape[0]  # GT | prediction | panoptic
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for key in demo.BARS:
        assert key in metrics and 0.0 <= metrics[key] <= 100.0, key
    assert "sem_seg/mIoU" in metrics
    html = (out / "report.html").read_text()
    assert "bbox/AP" in html and html.count("<img") == 3
    printed = capsys.readouterr().out
    assert "bbox/AP" in printed and "report ->" in printed


def test_demo_reports_a_missing_config_clearly(tmp_path, capsys):
    rc = demo.main(["--output-dir", str(tmp_path), "--config-file", str(tmp_path / "nope.yaml"),
                    "--eval-images", "0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err
    assert not list(tmp_path.iterdir())
