"""detectron2's default config tree, key for key and value for value.

``_C`` is the tree that :func:`workbench.config.get_cfg` clones. It exists so that a detectron2
YAML file (a model-zoo config or a ``cfg.dump()`` of a trained model) merges into workbench
unchanged: every key that detectron2 0.6+ (main branch) defines is here with the same default,
no more and no fewer, and the tests compare the key set against full detectron2 dumps.

Because a value's Python type is part of its contract (yacs refuses to merge ``1`` into a float
key), defaults keep detectron2's types: ``0.0`` not ``0``, tuples where detectron2 has tuples.

New workbench settings do not go here: this file is kept for compatibility only (see
``STYLE.md``, "Things to avoid").

Naming convention inherited from detectron2: a setting that differs between training and
inference ends in ``_TRAIN`` / ``_TEST``.
"""

from .config import CfgNode as CN

__all__ = ["_C"]

_C = CN()

# Config schema version; merge_from_file only accepts files written for this version.
_C.VERSION = 2

# ---------------------------------------------------------------------------------------------
# Model: what to build, where, and from which checkpoint.
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.LOAD_PROPOSALS = False  # read proposals from the dataset instead of running an RPN
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
# Where the model runs ("cuda", "cuda:1", "cpu"). How inference computes there is not a config
# key: workbench.utils.perf's switches decide it, per process (WORKBENCH_INFERENCE_OPT=...): on a
# GPU tf32, autocast ("bf16" / "fp16", post-processing kept in float32) and channels_last, all
# off by default (full float32, TF32 included); the CPU-only ones step aside off the CPU.
_C.MODEL.DEVICE = "cuda"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# Checkpoint to load: a local path or a URL (detectron2://..., https://...). Empty: random init.
_C.MODEL.WEIGHTS = ""
# Per-channel normalisation in INPUT.FORMAT order (BGR). MSRA / Detectron1 backbones folded the
# ImageNet std into conv1, hence a std of 1; torchvision-style backbones use [57.375, 57.12,
# 58.395].
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

# ---------------------------------------------------------------------------------------------
# Input resizing and augmentation.
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
# Training: shorter side drawn from MIN_SIZE_TRAIN ("choice") or from the [min, max] range it
# spans ("range"), longer side capped at MAX_SIZE_TRAIN.
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Inference: MIN_SIZE_TEST = 0 turns resizing off.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"  # or "vertical", "none"
# Random crop; SIZE is a fraction for TYPE "relative" / "relative_range", pixels for "absolute".
_C.INPUT.CROP = CN({"ENABLED": False})
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]
# Channel order the model expects ("BGR", or a PIL mode such as "RGB").
_C.INPUT.FORMAT = "BGR"
_C.INPUT.MASK_FORMAT = "polygon"  # ground-truth masks: "polygon" or "bitmask"

# ---------------------------------------------------------------------------------------------
# Datasets (names registered in a DatasetCatalog) and precomputed proposal files.
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()
_C.DATASETS.PROPOSAL_FILES_TRAIN = ()  # one file per TRAIN dataset, same order
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000
_C.DATASETS.TEST = ()
_C.DATASETS.PROPOSAL_FILES_TEST = ()  # one file per TEST dataset, same order
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000

# ---------------------------------------------------------------------------------------------
# Data loader.
# ---------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch portrait and landscape images separately
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"  # or "RepeatFactorTrainingSampler"
# RepeatFactorTrainingSampler: repeat images of classes rarer than this frequency, with the
# square-root rule of the LVIS paper when REPEAT_SQRT.
_C.DATALOADER.REPEAT_THRESHOLD = 0.0
_C.DATALOADER.REPEAT_SQRT = True
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images without annotations

# ---------------------------------------------------------------------------------------------
# Backbone. FREEZE_AT counts stages from the stem: 2 freezes the stem and res2.
# ---------------------------------------------------------------------------------------------
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
_C.MODEL.BACKBONE.FREEZE_AT = 2

# ---------------------------------------------------------------------------------------------
# FPN. IN_FEATURES must have consecutive power-of-two strides, e.g. res2..res5.
# ---------------------------------------------------------------------------------------------
_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = []
_C.MODEL.FPN.OUT_CHANNELS = 256
_C.MODEL.FPN.NORM = ""  # "" or "GN"
_C.MODEL.FPN.FUSE_TYPE = "sum"  # top-down + lateral: "sum" or "avg"

# ---------------------------------------------------------------------------------------------
# Proposal generator ("RPN", "RRPN" or "PrecomputedProposals").
# ---------------------------------------------------------------------------------------------
_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
# Proposals whose height or width is not above MIN_SIZE (input-image pixels) are dropped.
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0

# ---------------------------------------------------------------------------------------------
# Anchor generator. SIZES / ASPECT_RATIOS / ANGLES are list[list]: entry i is for feature map i,
# or a single entry is shared by every map. SIZES are sqrt(area) in input pixels, ASPECT_RATIOS
# are H / W, ANGLES are degrees (rotated anchors only). OFFSET in [0, 1) shifts the first
# anchor centre from the image corner, in units of the stride.
# ---------------------------------------------------------------------------------------------
_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
_C.MODEL.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

# ---------------------------------------------------------------------------------------------
# RPN.
# ---------------------------------------------------------------------------------------------
_C.MODEL.RPN = CN()
_C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
_C.MODEL.RPN.IN_FEATURES = ["res4"]
# Anchors reaching further than this many pixels outside the image are ignored; -1 keeps all.
_C.MODEL.RPN.BOUNDARY_THRESH = -1
# Anchor labelling: IoU < 0.3 -> background (0), [0.3, 0.7) -> ignored (-1), >= 0.7 -> object.
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
# Anchors sampled per image for the loss, and the foreground share of them.
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"  # or "giou"
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # (dx, dy, dw, dh) target scaling
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0  # 0 makes smooth L1 plain L1
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
# Top-k before NMS is per feature level with FPN; top-k after NMS is per image (unlike
# Detectron1, where it was per batch).
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
_C.MODEL.RPN.CONV_DIMS = [-1]  # hidden conv widths; -1 means "same as the input channels"

# ---------------------------------------------------------------------------------------------
# ROI heads: proposal sampling and the inference filter shared by box / mask / keypoint heads.
# ---------------------------------------------------------------------------------------------
_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # foreground classes only
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
# Proposal labelling: IoU < 0.5 -> background, >= 0.5 -> foreground.
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
# Proposals sampled per image for the losses, and the foreground share of them.
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Inference: drop detections scoring below SCORE_THRESH_TEST, then per-class NMS.
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True  # add ground-truth boxes to training proposals

# ---------------------------------------------------------------------------------------------
# Box head (NAME is unused by Res5ROIHeads, whose box head is res5 itself).
# ---------------------------------------------------------------------------------------------
_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NAME = ""
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"  # or "giou"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
# (dx, dy, dw, dh) target scaling, chosen so the targets have roughly unit variance.
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # 0: adaptive number of samples per bin
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
_C.MODEL.ROI_BOX_HEAD.NORM = ""  # "", "GN" or "SyncBN"
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
# Train the later heads on the box head's refined boxes instead of the proposals.
_C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False
# Classification loss variants: federated loss over a sampled subset of classes (LVIS), with
# class-frequency weights raised to FED_LOSS_FREQ_WEIGHT_POWER; sigmoid instead of softmax CE.
_C.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
_C.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER = 0.5
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 50

# ---------------------------------------------------------------------------------------------
# Cascade R-CNN: one entry per stage; the number of stages is the length of these lists.
# ---------------------------------------------------------------------------------------------
_C.MODEL.ROI_BOX_CASCADE_HEAD = CN()
_C.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = (
    (10.0, 10.0, 5.0, 5.0),
    (20.0, 20.0, 10.0, 10.0),
    (30.0, 30.0, 15.0, 15.0),
)
_C.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)

# ---------------------------------------------------------------------------------------------
# Mask head.
# ---------------------------------------------------------------------------------------------
_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""  # "", "GN" or "SyncBN"
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"

# ---------------------------------------------------------------------------------------------
# Keypoint head.
# ---------------------------------------------------------------------------------------------
_C.MODEL.ROI_KEYPOINT_HEAD = CN()
_C.MODEL.ROI_KEYPOINT_HEAD.NAME = "KRCNNConvDeconvUpsampleHead"
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = (512, 512, 512, 512, 512, 512, 512, 512)
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17  # COCO person keypoints
_C.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 1  # training images with fewer are skipped
# Loss normalisation: True divides by the visible keypoints of the batch (use LOSS_WEIGHT 1.0),
# False by all keypoints a full batch could hold (detectron2 recommends LOSS_WEIGHT 4.0).
_C.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = True
_C.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = "ROIAlignV2"

# ---------------------------------------------------------------------------------------------
# Semantic segmentation head (the "stuff" branch of Panoptic FPN).
# ---------------------------------------------------------------------------------------------
_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255  # label value that contributes no loss
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 54
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4  # every level is upsampled to this stride and summed
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"  # "" or "GN"
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0

# ---------------------------------------------------------------------------------------------
# Panoptic FPN: loss balance and how instance and semantic outputs are combined at inference.
# ---------------------------------------------------------------------------------------------
_C.MODEL.PANOPTIC_FPN = CN()
_C.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 1.0
_C.MODEL.PANOPTIC_FPN.COMBINE = CN({"ENABLED": True})
_C.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH = 0.5
_C.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 4096
_C.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5

# ---------------------------------------------------------------------------------------------
# RetinaNet.
# ---------------------------------------------------------------------------------------------
_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 80  # foreground classes only
_C.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
_C.MODEL.RETINANET.NUM_CONVS = 4  # per tower, not counting the final prediction conv
# Anchor labelling: < 0.4 background, [0.4, 0.5) ignored, >= 0.5 foreground.
_C.MODEL.RETINANET.IOU_THRESHOLDS = [0.4, 0.5]
_C.MODEL.RETINANET.IOU_LABELS = [0, -1, 1]
_C.MODEL.RETINANET.PRIOR_PROB = 0.01  # initial foreground probability (sets the logits bias)
_C.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05
_C.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 1000  # per level, before NMS
_C.MODEL.RETINANET.NMS_THRESH_TEST = 0.5
_C.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0
_C.MODEL.RETINANET.FOCAL_LOSS_ALPHA = 0.25
_C.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1
_C.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "smooth_l1"  # or "giou"
_C.MODEL.RETINANET.NORM = ""  # "", "BN", "SyncBN", "FrozenBN" or "GN" in the towers

# ---------------------------------------------------------------------------------------------
# ResNet / ResNeXt, used by the backbone and by Res5ROIHeads.
# ---------------------------------------------------------------------------------------------
_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]  # res4 for C4 models, res2..res5 for FPN
_C.MODEL.RESNETS.NUM_GROUPS = 1  # > 1 makes it a ResNeXt
_C.MODEL.RESNETS.NORM = "FrozenBN"  # "FrozenBN", "GN", "SyncBN" or "BN"
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Stride-2 on the 1x1 conv (original MSRA ResNet) rather than on the 3x3 (Caffe2 / torchvision).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
_C.MODEL.RESNETS.RES5_DILATION = 1  # 1 or 2
# Output width of res2 (scales every later 1x1 conv); R18 / R34 need 64.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# Deformable convolution in res2..res5 (v2 "modulated" or v1), with its offset groups.
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]
_C.MODEL.RESNETS.DEFORM_MODULATED = False
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1

# ---------------------------------------------------------------------------------------------
# Solver: optimiser, learning-rate schedule, checkpointing.
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
_C.SOLVER.BASE_LR_END = 0.0  # final LR of the cosine schedule
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # for the affine parameters of normalisation layers
_C.SOLVER.GAMMA = 0.1  # LR multiplier at each step
_C.SOLVER.STEPS = (30000,)
_C.SOLVER.NUM_DECAYS = 3  # decays of the WarmupStepWithFixedGammaLR schedule
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"
# Whether the schedule after warmup is rescaled to the iterations left once warmup ends.
_C.SOLVER.RESCALE_INTERVAL = False
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.IMS_PER_BATCH = 16  # total over all workers
# With a non-zero value, the trainer rescales batch size, LR and schedule to the actual number
# of workers.
_C.SOLVER.REFERENCE_WORLD_SIZE = 0
# Detectron1 used twice the LR and no weight decay for biases; kept for reproductions only.
# WEIGHT_DECAY_BIAS None means "same as WEIGHT_DECAY".
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.WEIGHT_DECAY_BIAS = None
# Gradient clipping: "value" clips each element, "norm" clips each parameter's L-NORM_TYPE norm.
_C.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False})
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# Automatic mixed precision for training (inference is unaffected).
_C.SOLVER.AMP = CN({"ENABLED": False})

# ---------------------------------------------------------------------------------------------
# Evaluation and inference.
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
# Expected metrics for end-to-end checks: [[task, metric, value, tolerance], ...].
_C.TEST.EXPECTED_RESULTS = []
_C.TEST.EVAL_PERIOD = 0  # iterations between evaluations during training; 0 disables
# Per-keypoint OKS sigmas; empty uses COCO's.
_C.TEST.KEYPOINT_OKS_SIGMAS = []
_C.TEST.DETECTIONS_PER_IMAGE = 100
# Test-time augmentation: several shorter-side sizes, optionally with flips.
_C.TEST.AUG = CN({"ENABLED": False})
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True
# Recompute BatchNorm statistics before evaluation.
_C.TEST.PRECISE_BN = CN({"ENABLED": False})
_C.TEST.PRECISE_BN.NUM_ITER = 200

# ---------------------------------------------------------------------------------------------
# Miscellaneous.
# ---------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # negative: a different random seed every run
_C.CUDNN_BENCHMARK = False
# float32 matmul / cuDNN precision ("highest", "high", "medium"); empty leaves torch alone.
_C.FLOAT32_PRECISION = ""
_C.VIS_PERIOD = 0  # iterations between training visualisations; 0 disables
# A scratch group for quick experiments; read it through workbench.config.global_cfg.
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0
