"""Defaults for the common workflows: ``DefaultPredictor`` (a model built from a cfg, with
its weights, that takes a photo), ``DefaultTrainer`` (training with the standard hooks),
and the command-line / setup helpers of ``tools/train_net.py``.

Shapes (predictor): H x W the photo, H' x W' after ``ResizeShortestEdge`` (what the model
sees); C is 3 for BGR / RGB and 1 for "L". Outputs are at H x W: the model rescales them to
the ``height`` / ``width`` it is given, which are the photo's.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from workbench.checkpoint import DetectionCheckpointer
from workbench.config import CfgNode
from workbench.data import build_detection_test_loader, build_detection_train_loader
from workbench.data.test_time import INPUT_FORMATS, InferenceInputs
from workbench.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format, verify_results
from workbench.modeling import build_model
from workbench.solver import build_lr_scheduler, build_optimizer
from workbench.utils import comm, perf
from workbench.utils.env import seed_all_rng
from workbench.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from workbench.utils.logger import setup_logger

from . import hooks
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = [
    "DefaultPredictor", "DefaultTrainer", "create_ddp_model", "default_argument_parser",
    "default_setup", "default_writers",
]



class DefaultPredictor:
    """The model of ``cfg``, with ``cfg.MODEL.WEIGHTS`` loaded, in eval mode, for one image
    (or a few) at a time.

    It does what detectron2's ``DefaultPredictor`` does: takes an (H, W, 3) uint8 image in BGR
    order (what ``cv2.imread`` returns), converts it to ``cfg.INPUT.FORMAT``, resizes it with
    ``ResizeShortestEdge([MIN_SIZE_TEST] * 2, MAX_SIZE_TEST)``, and runs the model under
    ``torch.inference_mode()`` (``torch.no_grad()`` when ``workbench.utils.perf``'s
    ``inference_mode`` switch is off) with ``height`` / ``width`` set to the original size, so
    that outputs are in the original image's pixels.

    Outputs are then inference tensors: read them, copy them, move them freely; to modify one
    in place outside ``torch.inference_mode()`` (``boxes.scale(...)``), ``clone()`` it first.

    On a GPU (``cfg.MODEL.DEVICE = "cuda"``) the resized uint8 images are copied to the device
    and converted there, outputs stay on the device, and a list of images
    (:meth:`predict_batch`) runs as one batch. The GPU switches of ``workbench.utils.perf``
    (``tf32``, ``autocast``, ``channels_last``; all off by default) apply to its model calls as
    to any inference; the CPU-only ones step aside on their own.

    Args:
        cfg: A config; cloned, so later changes to it do not affect the predictor.

    Attributes:
        cfg: The predictor's own copy of the config.
        model: The model (``nn.Module``), in eval mode.
        aug: The resize (:class:`~workbench.data.transforms.ResizeShortestEdge`).
        input_format: ``cfg.INPUT.FORMAT``: "BGR", "RGB" or "L".

    Example::

        predictor = DefaultPredictor(cfg)
        bgr = np.asarray(Image.open("photo.jpg").convert("RGB"))[:, :, ::-1]
        instances = predictor(bgr)["instances"]
    """

    def __init__(self, cfg) -> None:
        self.cfg = cfg.clone()  # the model may modify its cfg
        if self.cfg.INPUT.FORMAT not in INPUT_FORMATS:
            raise ValueError(f"DefaultPredictor supports cfg.INPUT.FORMAT in {INPUT_FORMATS}, got "
                             f"{self.cfg.INPUT.FORMAT!r}.")
        # The test-time inputs, shared with workbench.inspect.trace (the pass that was scored).
        self.inputs = InferenceInputs(self.cfg)
        self.model = build_model(self.cfg)
        self.model.eval()
        DetectionCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)

    @property
    def input_format(self) -> str:
        """``cfg.INPUT.FORMAT``, the channel order the model is given (shared with :attr:`inputs`)."""
        return self.inputs.input_format

    @input_format.setter
    def input_format(self, value: str) -> None:
        if value not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {value!r}.")
        self.inputs.input_format = value

    @property
    def aug(self):
        """The test-time resize (``ResizeShortestEdge``), shared with :attr:`inputs`."""
        return self.inputs.aug

    @aug.setter
    def aug(self, value) -> None:
        self.inputs.aug = value

    def __call__(self, original_image: Union[np.ndarray, Sequence[np.ndarray]]
                 ) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Runs the model on one image, or on a list of images in one batch.

        Args:
            original_image: An (H, W, 3) uint8 array in BGR order, or a list of them.

        Returns:
            For one image, the model's output dict for it (e.g. ``{"instances": Instances}``,
            at H x W). For a list, a list of such dicts from one batched model call (see
            :meth:`predict_batch`).
        """
        if isinstance(original_image, (list, tuple)):
            return self.predict_batch(original_image)
        return self.predict_batch([original_image], batched=False)[0]

    def predict_batch(self, original_images: Sequence[np.ndarray], *, batched: bool = True
                      ) -> List[Dict[str, Any]]:
        """Runs the model on several (H_i, W_i, 3) uint8 BGR images.

        Each image is converted and resized on its own. With ``batched=True`` all then go
        through the model in one call, padded to a common size, as in detectron2's batched
        inference; this is how the reference fixtures were made. Padding changes what deep
        features see (the padded area is not zero after the first conv + norm, and ResNet's
        receptive field spans the image), so results can differ from one-image calls: a little
        with trained weights, a lot with random ones. ``batched=False`` runs the images one
        at a time and gives exactly what ``predictor(image)`` gives for each.

        Returns:
            One output dict per image, in order.
        """
        if not isinstance(original_images, (list, tuple)):
            raise TypeError(
                f"predict_batch takes a list of images, got {type(original_images).__name__}."
            )
        inputs = [self._prepare(img, i) for i, img in enumerate(original_images)]
        with _inference_context():
            if not batched:
                return [self.model([x])[0] for x in inputs]
            return self.model(inputs) if inputs else []

    def _prepare(self, image: np.ndarray, index: int = 0) -> Dict[str, Any]:
        """(H, W, 3) uint8 BGR -> {"image": (C, H', W') float32 tensor, "height": H, "width": W},
        made on the model's device (on a GPU: uint8 copied, converted there)."""
        return self.inputs.from_image(image, index, device=getattr(self.model, "device", None))


def _inference_context():
    """``torch.inference_mode()``, or ``torch.no_grad()`` with the perf switch off."""
    if perf.get_inference_options().inference_mode:
        return torch.inference_mode()
    return torch.no_grad()


# ------------------------------------------------------------------------------------ training
def create_ddp_model(model: torch.nn.Module, *, fp16_compression: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Wraps ``model`` in ``DistributedDataParallel`` when there are several processes.

    On GPUs the model's device is this process's local GPU (``device_ids`` default); on CPUs
    (gloo) no device ids are given.

    Args:
        fp16_compression: Send gradients as float16 (saves bandwidth between machines).
        **kwargs: For ``DistributedDataParallel`` (e.g. ``broadcast_buffers=False``,
            ``find_unused_parameters=True``).
    """
    if comm.get_world_size() == 1:
        return model
    on_cuda = any(p.is_cuda for p in model.parameters())
    if "device_ids" not in kwargs and on_cuda:
        kwargs["device_ids"] = [comm.get_local_rank()]
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2's training-script flags: ``--config-file``, ``--resume``, ``--eval-only``,
    ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url`` and trailing
    ``KEY VALUE`` config overrides (``opts``)."""
    parser = argparse.ArgumentParser(
        epilog=epilog or f"""
Examples:

Run on a single machine:
    $ {sys.argv[0]} --num-gpus 8 --config-file cfg.yaml

Run on CPU only (1 process; --num-gpus 2 without CUDA starts 2 CPU processes with gloo):
    $ {sys.argv[0]} --num-gpus 0 --config-file cfg.yaml MODEL.DEVICE cpu

Change some config options:
    $ {sys.argv[0]} --config-file cfg.yaml MODEL.WEIGHTS /path/to/weight.pth SOLVER.BASE_LR 0.001

Run on multiple machines:
    (machine0)$ {sys.argv[0]} --machine-rank 0 --num-machines 2 --dist-url <URL> [--other-flags]
    (machine1)$ {sys.argv[0]} --machine-rank 1 --num-machines 2 --dist-url <URL> [--other-flags]
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument("--resume", action="store_true",
                        help="Whether to attempt to resume from the checkpoint directory. "
                             "See documentation of `DefaultTrainer.resume_or_load()` for what it means.")
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="number of gpus *per machine* (processes per machine; CPU processes without CUDA)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    # PyTorch still may leave orphan processes in multi-gpu training; a port derived from the
    # user id avoids collisions between users of one machine.
    port = 2 ** 15 + 2 ** 14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2 ** 14
    parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}",
                        help="initialization URL for pytorch distributed backend ('auto': a free local port).")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="Modify config options at the end of the command. For Yacs configs, use "
                             "space-separated \"PATH.KEY VALUE\" pairs.")
    return parser


def _collect_env_info() -> str:
    import platform

    import torchvision

    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", "")),
        ("numpy", np.__version__),
        ("PyTorch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("CUDA available", torch.cuda.is_available()),
        ("CPU threads", torch.get_num_threads()),
        ("machine", platform.machine()),
    ]
    if torch.cuda.is_available():
        rows.append(("GPU 0", torch.cuda.get_device_name(0)))
    return "\n".join(f"{k:<16} {v}" for k, v in rows)


def default_setup(cfg: CfgNode, args: Any) -> None:
    """What every training script does first: create OUTPUT_DIR, set up logging (console on
    rank 0, ``OUTPUT_DIR/log.txt``), log the environment, arguments and config, save the full
    config to ``OUTPUT_DIR/config.yaml``, and seed all generators with ``cfg.SEED + rank``
    (a random seed if ``SEED < 0``)."""
    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    rank = comm.get_rank()
    setup_logger(output_dir or None, distributed_rank=rank, name="workbench")
    logger = logging.getLogger("workbench")
    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", _collect_env_info())
    logger.info("Command line arguments: %s", args)
    if getattr(args, "config_file", ""):
        with open(args.config_file) as f:
            logger.info("Contents of args.config_file=%s:\n%s", args.config_file, f.read())
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        logger.info("Running with full config:\n%s", cfg.dump())
        with open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", path)
    seed = cfg.SEED
    used = seed_all_rng(None if seed < 0 else seed + rank)
    logger.info("Using a random seed of %d", used)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def default_writers(output_dir: str, max_iter: Optional[int] = None) -> List[EventWriter]:
    """Console printer (with ETA), ``output_dir/metrics.json``, and TensorBoard event files
    when the ``tensorboard`` package is installed."""
    os.makedirs(output_dir, exist_ok=True)
    writers: List[EventWriter] = [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
    ]
    try:
        writers.append(TensorboardXWriter(output_dir))
    except ImportError:
        logging.getLogger(__name__).info("tensorboard is not installed: no TensorBoard event files.")
    return writers


class DefaultTrainer(TrainerBase):
    """Training with detectron2's standard pieces, from a cfg:

    model (:func:`build_model`, wrapped in DDP when distributed), SGD + LR schedule from
    ``cfg.SOLVER``, :func:`build_detection_train_loader`, :class:`SimpleTrainer` (or
    :class:`AMPTrainer` with ``SOLVER.AMP.ENABLED``), checkpoints in ``OUTPUT_DIR``, and the
    hooks: iteration timer, LR scheduler, periodic checkpoints (``SOLVER.CHECKPOINT_PERIOD``),
    evaluation every ``TEST.EVAL_PERIOD`` and at the end, metric writers every
    :attr:`WRITER_PERIOD` iterations (rank 0 only).

    Override the ``build_*`` classmethods to change a piece; ``build_evaluator`` must be
    implemented for evaluation.

    Example::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    #: Iterations between metric writes (console, metrics.json).
    WRITER_PERIOD = 20

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__()
        logger = logging.getLogger("workbench")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            # Assume you want to save checkpoints together with logs/statistics
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # The model, optimizer and loader live in the inner trainer.
    model = property(lambda self: self._trainer.model,
                     lambda self, value: setattr(self._trainer, "model", value))
    optimizer = property(lambda self: self._trainer.optimizer,
                         lambda self, value: setattr(self._trainer, "optimizer", value))
    data_loader = property(lambda self: self._trainer.data_loader,
                           lambda self, value: setattr(self._trainer, "data_loader", value))

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: load it (model, optimizer, scheduler,
        iteration) and continue after its iteration. Otherwise load ``cfg.MODEL.WEIGHTS``
        (model only) and start at 0."""
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            # The checkpoint was saved after iteration self.iter finished.
            self.start_iter = self.iter + 1

    def build_hooks(self) -> List[Optional[hooks.HookBase]]:
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # no worker processes for the (periodic) evaluation

        ret: List[Optional[hooks.HookBase]] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
        ]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results() -> Dict[str, Any]:
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        # Evaluation runs on all ranks; after checkpointing, so a crash in it keeps the checkpoint.
        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            # Writers run last, so that they see everything the other hooks recorded.
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=self.WRITER_PERIOD))
        return ret

    def build_writers(self) -> List[EventWriter]:
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    def train(self) -> Optional[Dict[str, Any]]:
        """Trains from ``start_iter`` to ``SOLVER.MAX_ITER``; returns the last evaluation
        results if ``TEST.EXPECTED_RESULTS`` asks to verify them."""
        super().train(self.start_iter, self.max_iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            if not hasattr(self, "_last_eval_results"):
                raise RuntimeError("No evaluation results obtained during training!")
            verify_results(self.cfg, self._last_eval_results)
            return self._last_eval_results
        return None

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        model = build_model(cfg)
        logging.getLogger(__name__).info("Model:\n%s", model)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> DatasetEvaluator:
        raise NotImplementedError(
            "If you want DefaultTrainer to automatically run evaluation, please implement "
            "`build_evaluator()` in subclasses (see tools/train_net.py for example). "
            "Alternatively, you can call evaluation functions yourself (see Colab balloon "
            "tutorial for example)."
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module,
             evaluators: Union[DatasetEvaluator, Sequence[DatasetEvaluator], None] = None) -> Dict[str, Any]:
        """Evaluates ``model`` on each of ``cfg.DATASETS.TEST``.

        Args:
            evaluators: One per test dataset; default :meth:`build_evaluator`.

        Returns:
            ``{dataset: {task: {metric: value}}}``, or the inner dict for a single dataset.
        """
        logger = logging.getLogger(__name__)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(cfg.DATASETS.TEST) != len(evaluators):
            raise ValueError(f"{len(cfg.DATASETS.TEST)} test datasets but {len(evaluators)} evaluators.")
        results: Dict[str, Any] = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, dataset_name)
            if evaluators is not None:
                evaluator = evaluators[idx]
            else:
                try:
                    evaluator = cls.build_evaluator(cfg, dataset_name)
                except NotImplementedError:
                    logger.warning("No evaluator found. Use `DefaultTrainer.test(evaluators=)`, "
                                   "or implement its `build_evaluator` method.")
                    results[dataset_name] = {}
                    continue
            results_i = inference_on_dataset(model, data_loader, evaluator)
            results[dataset_name] = results_i
            if comm.is_main_process():
                if not isinstance(results_i, dict):
                    raise TypeError(f"Evaluator must return a dict on the main process. Got {results_i} instead.")
                logger.info("Evaluation results for %s in csv format:", dataset_name)
                print_csv_format(results_i)
        if len(results) == 1:
            results = list(results.values())[0]
        return results

    @staticmethod
    def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
        """Rescales batch size, LR, iterations, warmup, steps, eval and checkpoint periods from
        ``SOLVER.REFERENCE_WORLD_SIZE`` processes to ``num_workers`` (linear scaling rule);
        no-op if the reference is 0 or equal."""
        old_world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE
        if old_world_size == 0 or old_world_size == num_workers:
            return cfg
        cfg = cfg.clone()
        frozen = cfg.is_frozen()
        cfg.defrost()
        if cfg.SOLVER.IMS_PER_BATCH % old_world_size != 0:
            raise ValueError("Invalid REFERENCE_WORLD_SIZE in config!")
        scale = num_workers / old_world_size
        bs = cfg.SOLVER.IMS_PER_BATCH = int(round(cfg.SOLVER.IMS_PER_BATCH * scale))
        lr = cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * scale
        max_iter = cfg.SOLVER.MAX_ITER = int(round(cfg.SOLVER.MAX_ITER / scale))
        warmup_iter = cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_ITERS / scale))
        cfg.SOLVER.STEPS = tuple(int(round(s / scale)) for s in cfg.SOLVER.STEPS)
        cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
        cfg.SOLVER.CHECKPOINT_PERIOD = int(round(cfg.SOLVER.CHECKPOINT_PERIOD / scale))
        cfg.SOLVER.REFERENCE_WORLD_SIZE = num_workers
        logging.getLogger(__name__).info(
            "Auto-scaling the config to batch_size=%d, learning_rate=%s, max_iter=%d, warmup=%d.",
            bs, lr, max_iter, warmup_iter)
        if frozen:
            cfg.freeze()
        return cfg
