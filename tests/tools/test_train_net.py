"""tools/train_net.py end to end on the CPU: train a tiny model for a few iterations with
evaluation at the end, then --eval-only --resume from the checkpoint it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"

OVERRIDES = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "8", "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.PIXEL_STD", "[57.375,57.12,58.395]",
    "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005", "SOLVER.WARMUP_ITERS", "0", "SOLVER.MAX_ITER", "3",
    "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100", "SEED", "1",
    "DATASETS.TRAIN", "('rects_tn',)", "DATASETS.TEST", "('rects_tn',)",
]


def _write_dataset(root: Path):
    rng = np.random.RandomState(0)
    dicts = []
    for i in range(3):
        img = rng.randint(0, 50, size=(56, 72, 3)).astype(np.uint8)
        x0, y0 = 10 + 5 * i, 8
        img[y0:y0 + 20, x0:x0 + 24] = (220, 40, 40)
        Image.fromarray(img).save(root / f"{i}.png")
        dicts.append({"file_name": str(root / f"{i}.png"), "height": 56, "width": 72, "image_id": i,
                      "annotations": [{"bbox": [x0, y0, 24, 20], "bbox_mode": 1, "category_id": i % 2, "iscrowd": 0}]})
    (root / "dicts.json").write_text(json.dumps(dicts))
    (root / "register.py").write_text(textwrap.dedent(f'''
        import json
        from workbench.data import DatasetCatalog, MetadataCatalog
        DatasetCatalog.register("rects_tn", lambda: json.load(open({str(root / "dicts.json")!r})))
        MetadataCatalog.get("rects_tn").set(thing_classes=["red", "blue"], evaluator_type="coco")
    '''))


def _run(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(TRAIN_NET)] + args, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_then_eval_only(tmp_path):
    _write_dataset(tmp_path)
    out = tmp_path / "output"
    common = ["--num-gpus", "0", "--register-module", str(tmp_path / "register.py"),
              "--config-file", str(REPO / "workbench/model_zoo/configs/COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")]
    log = _run(common + OVERRIDES + ["OUTPUT_DIR", str(out)], tmp_path)  # MODEL.DEVICE cuda -> cpu
    assert "Starting training from iteration 0" in log
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    assert (out / "model_final.pth").exists() and (out / "config.yaml").exists() and (out / "log.txt").exists()
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert records[0]["iteration"] == 2 and "total_loss" in records[0]
    assert "bbox/AP" in records[-1]  # the final evaluation is recorded too
    assert (out / "inference" / "coco_instances_results.json").exists()

    log = _run(common + ["--eval-only", "--resume"] + OVERRIDES + ["OUTPUT_DIR", str(out)], tmp_path)
    assert "model_final.pth" in log and "copypaste: Task: bbox" in log
    assert "Starting training" not in log
