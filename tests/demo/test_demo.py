"""``python -m workbench.demo`` (``make demo``) end to end on the embedded model: one run with the
default pictures (4 validation images, 3 photos, the stage trace) and a small evaluation, shared by
the tests of this file."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench import demo
from workbench.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader

REPO = Path(__file__).resolve().parents[2]
EVAL_DATASET = "shapes_val_100"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(output folder, printed text) of one demo run: default pictures, 6 evaluated images."""
    out = tmp_path_factory.mktemp("demo") / "output"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = demo.main(["--output-dir", str(out), "--eval-images", "6", "--dataset", EVAL_DATASET])
    assert rc == 0
    return out, printed.getvalue()


def test_files_land_directly_in_the_output_dir(run):
    out, printed = run
    names = {p.name for p in out.iterdir() if p.is_file()}
    expected = {"val_0.png", "val_1.png", "val_2.png", "val_3.png", "trace.png", "report.html",
                "metrics.json", "photo_coffee.png", "photo_chelsea.png", "photo_rocket.png"}
    assert names == expected, names ^ expected  # nothing half-written (.tmp) left either
    val = np.asarray(Image.open(out / "val_0.png"))
    assert val.ndim == 3 and val.shape[1] > 2 * val.shape[0]  # GT | prediction | panoptic
    assert f"report -> {out / 'report.html'}" in printed


def test_metrics_json_has_the_headline_numbers_per_class_ap_and_is_strict_json(run):
    out, printed = run

    def no_nan(name):
        raise AssertionError(f"metrics.json holds {name}, which is not JSON")

    doc = json.loads((out / "metrics.json").read_text(), parse_constant=no_nan)
    for name in ("box AP", "mask AP", "keypoint AP", "PQ", "sem_seg mIoU"):
        assert 0.0 <= doc["headline"][name] <= 100.0, name
    assert doc["headline"]["box AP"] == doc["metrics"]["bbox/AP"]
    for key in demo.BARS:
        assert 0.0 <= doc["metrics"][key] <= 100.0, key
    classes = MetadataCatalog.get(EVAL_DATASET).thing_classes
    for task in ("box AP", "mask AP", "keypoint AP"):
        assert list(doc["per_class"][task]) == classes, task
    assert doc["per_class"]["box AP"]["circle"] == doc["metrics"]["bbox/AP-circle"]
    # The headline numbers and the per-class table are printed.
    for name in ("box AP", "mask AP", "keypoint AP", "PQ"):
        assert re.search(rf"^  {name} +{doc['headline'][name]:.1f}\b", printed, re.M), name
    assert re.search(r"^  circle +{:.1f} ".format(doc["per_class"]["box AP"]["circle"]), printed, re.M)


def test_report_is_small_self_contained_captioned_and_has_ap_per_class(run):
    out, _ = run
    size = (out / "report.html").stat().st_size
    assert size < 1_000_000, f"report.html is {size / 1e6:.2f} MB with the default pictures"
    doc = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', doc)
    assert len(images) == 1 + 4 * 3 + 3  # trace, 4 x (GT, prediction, panoptic), 3 photos
    assert all(src.startswith("data:image/jpeg;base64,") for src in images)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", doc)
    assert len(captions) == len(images)
    for kind in ("ground truth", "prediction", "panoptic"):
        assert sum(c.startswith(kind) for c in captions) >= 4, kind
    metrics = json.loads((out / "metrics.json").read_text())
    table = re.search(r"<table class=per-class>(.*?)</table>", doc, re.S).group(1)
    for name, ap in metrics["per_class"]["box AP"].items():
        assert re.search(rf"<td>{name}</td><td class=n>{ap:.1f}</td>", table), name


def test_pictures_are_the_pass_the_evaluator_scores(run):
    """val_0.png's prediction panel is the drawing of the evaluator's pass: the test loader's
    input (resized to MIN_SIZE_TEST; the stored image is 352 x 384) through the model."""
    out, _ = run
    args = demo._parse(["--dataset", EVAL_DATASET])
    cfg = demo.build_cfg(args)
    from workbench.engine import DefaultPredictor

    predictor = DefaultPredictor(cfg)
    dic = DatasetCatalog.get(EVAL_DATASET)[0]
    scored_input = next(iter(build_detection_test_loader(cfg, EVAL_DATASET)))
    assert scored_input[0]["file_name"] == dic["file_name"]
    assert tuple(scored_input[0]["image"].shape[1:]) != (dic["height"], dic["width"])  # resized
    with torch.no_grad():
        scored = predictor.model(scored_input)[0]["instances"]
        raw = torch.as_tensor(np.asarray(Image.open(dic["file_name"]).convert("RGB"))[:, :, ::-1].copy())
        unresized = predictor.model([{"image": raw.permute(2, 0, 1).float(), "height": dic["height"],
                                      "width": dic["width"]}])[0]["instances"]
    traced = demo.scored_pass(predictor, dic).outputs[0]
    assert torch.equal(traced["instances"].pred_boxes.tensor, scored.pred_boxes.tensor)
    assert not (len(unresized) == len(scored) and torch.allclose(unresized.pred_boxes.tensor,
                                                                 scored.pred_boxes.tensor))

    # The picture on disk is drawn from that pass.
    meta = MetadataCatalog.get(EVAL_DATASET)
    drawn = dict(demo.validation_panels(dic, traced, meta, args.score_thresh))
    prediction = next(im for caption, im in drawn.items() if caption.startswith("prediction"))
    h, w = prediction.shape[:2]
    val = np.asarray(Image.open(out / "val_0.png").convert("RGB"))
    gap = 6
    np.testing.assert_array_equal(val[:h, w + gap: 2 * w + gap], prediction)


def test_an_abbreviated_option_is_an_error_not_a_prefix(tmp_path, capsys):
    """``--output output/demo.png`` (what the Makefile once passed) used to be read as
    ``--output-dir`` and wrote everything into a folder named demo.png."""
    with pytest.raises(SystemExit) as e:
        demo.main(["--output", str(tmp_path / "demo.png"), "--eval-images", "0"])
    assert e.value.code == 2
    assert "unrecognized arguments: --output" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an option after the KEY VALUE overrides
        demo.main(["--eval-images", "0", "MODEL.DEVICE", "cpu", "--output-dir", str(tmp_path)])
    assert "options must come before" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_make_demo_writes_into_output(monkeypatch):
    """The Makefile's demo recipe, parsed as the demo parses it, writes into output/."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    words = shlex.split(recipe)
    assert words[:3] == ["$(BIN)/python", "-m", "workbench.demo"], recipe
    assert Path(demo._parse(words[3:]).output_dir) == Path("output")


def test_demo_reports_a_missing_config_clearly(tmp_path, capsys):
    rc = demo.main(["--output-dir", str(tmp_path), "--config-file", str(tmp_path / "nope.yaml"),
                    "--eval-images", "0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err
    assert not list(tmp_path.iterdir())
