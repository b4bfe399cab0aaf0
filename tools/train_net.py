#!/usr/bin/env python
"""Train or evaluate a model from a config, with detectron2's command line.

    python tools/train_net.py --config-file cfg.yaml --num-gpus 0 MODEL.DEVICE cpu SOLVER.IMS_PER_BATCH 2
    python tools/train_net.py --config-file cfg.yaml --num-gpus 0 --resume          # continue
    python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file cfg.yaml --num-gpus 2 ...               # 2 processes (gloo without CUDA)
    torchrun --nproc_per_node 2 tools/train_net.py --config-file cfg.yaml ...       # same, started by torchrun

Datasets named in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` must be registered in every process:
``--register-module`` names a Python module (``pkg.mod``) or file (``path/to/register.py``)
that registers them when imported. The evaluator of each test dataset is chosen by its
metadata's ``evaluator_type``: "coco" (COCOEvaluator), "sem_seg" (SemSegEvaluator),
"coco_panoptic_seg" (all three, with COCOPanopticEvaluator).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os

import torch

from workbench.checkpoint import DetectionCheckpointer
from workbench.config import get_cfg
from workbench.data import MetadataCatalog
from workbench.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from workbench.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    verify_results,
)
from workbench.utils import comm


def build_evaluator(cfg, dataset_name: str, output_folder: str = None):
    """The evaluator(s) for a test dataset, from its metadata's ``evaluator_type``."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_list = []
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type in ["sem_seg", "coco_panoptic_seg"]:
        evaluator_list.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type in ["coco", "coco_panoptic_seg"]:
        evaluator_list.append(COCOEvaluator(dataset_name, output_dir=output_folder,
                                            kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS))
    if evaluator_type == "coco_panoptic_seg":
        evaluator_list.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if len(evaluator_list) == 0:
        raise NotImplementedError(
            f"no Evaluator for the dataset {dataset_name} with the type {evaluator_type}")
    if len(evaluator_list) == 1:
        return evaluator_list[0]
    return DatasetEvaluators(evaluator_list)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with evaluators chosen by :func:`build_evaluator`."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)


def import_register_module(name: str) -> None:
    """Imports a module by dotted name or file path (it registers datasets as a side effect)."""
    if not name:
        return
    if name.endswith(".py") or os.path.sep in name:
        spec = importlib.util.spec_from_file_location("_workbench_register", os.path.abspath(name))
        if spec is None or spec.loader is None:
            raise ImportError(f"Cannot import {name}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        importlib.import_module(name)


def setup(args):
    """cfg from the config file and the trailing KEY VALUE overrides, frozen; logging etc."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and (args.num_gpus == 0 or not torch.cuda.is_available()):
        logging.getLogger("workbench").warning(
            "MODEL.DEVICE is %s but %s: using the CPU.", cfg.MODEL.DEVICE,
            "--num-gpus is 0" if args.num_gpus == 0 else "CUDA is not available")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    import_register_module(getattr(args, "register_module", ""))
    cfg = setup(args)

    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    parser = default_argument_parser()
    parser.add_argument("--register-module", default="", metavar="MODULE",
                        help="module name or .py file imported in every process before building "
                             "(to register datasets)")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
