"""detectron2's module paths in workbench: ``detectron2.X`` names that ``workbench.X`` provides,
and the ones it does not.

Both lists are data, derived by walking detectron2's source (every module under
``detectron2/`` except ``model_zoo/configs``, ``tracking/``, ``export/`` and tests; the names of
its ``__all__``, or of a package's imports, or else its public top-level classes and functions,
read with ``ast``). ``NOT_PROVIDED`` is asserted absent so that it stays true: when workbench
gains one of them, move it to ``PROVIDED``.
"""

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (module path below ``detectron2.`` / ``workbench.``, names detectron2 has there that workbench
# has at the same path). "" is the top-level package; an empty list checks the module exists.
PROVIDED = [
    ("", []),
    ("checkpoint", ["Checkpointer", "DetectionCheckpointer", "PeriodicCheckpointer"]),
    ("checkpoint.c2_model_loading", [
        "align_and_update_state_dicts", "convert_basic_c2_names", "convert_c2_detectron_names"]),
    ("checkpoint.catalog", []),
    ("checkpoint.detection_checkpoint", ["DetectionCheckpointer"]),
    ("config", [
        "CfgNode", "LazyCall", "LazyConfig", "configurable", "downgrade_config", "get_cfg",
        "global_cfg", "instantiate", "set_global_cfg", "upgrade_config"]),
    ("config.compat", ["downgrade_config", "upgrade_config"]),
    ("config.config", ["CfgNode", "configurable", "get_cfg", "set_global_cfg"]),
    ("config.defaults", ["CN"]),
    ("config.instantiate", ["instantiate"]),
    ("config.lazy", ["LazyCall", "LazyConfig"]),
    ("data", [
        "DatasetCatalog", "DatasetFromList", "DatasetMapper", "MapDataset", "Metadata",
        "MetadataCatalog", "ToIterableDataset", "build_batch_data_loader",
        "build_detection_test_loader", "build_detection_train_loader", "datasets",
        "get_detection_dataset_dicts", "load_proposals_into_dataset",
        "print_instances_class_histogram", "samplers", "transforms"]),
    ("data.build", [
        "build_batch_data_loader", "build_detection_test_loader", "build_detection_train_loader",
        "get_detection_dataset_dicts", "load_proposals_into_dataset",
        "print_instances_class_histogram"]),
    ("data.catalog", ["DatasetCatalog", "Metadata", "MetadataCatalog"]),
    ("data.common", [
        "AspectRatioGroupedDataset", "DatasetFromList", "MapDataset", "ToIterableDataset"]),
    ("data.dataset_mapper", ["DatasetMapper"]),
    ("data.datasets", [
        "convert_to_coco_json", "get_lvis_instances_meta", "load_coco_json", "load_lvis_json",
        "load_sem_seg", "load_voc_instances", "register_coco_instances", "register_coco_panoptic",
        "register_coco_panoptic_separated", "register_lvis_instances", "register_pascal_voc"]),
    ("data.datasets.builtin", [
        "register_all_ade20k", "register_all_cityscapes", "register_all_coco", "register_all_lvis",
        "register_all_pascal_voc"]),
    ("data.datasets.builtin_meta", []),
    ("data.datasets.cityscapes", ["load_cityscapes_instances", "load_cityscapes_semantic"]),
    ("data.datasets.cityscapes_panoptic", [
        "get_cityscapes_panoptic_files", "load_cityscapes_panoptic", "register_all_cityscapes_panoptic"]),
    ("data.datasets.coco", [
        "convert_to_coco_json", "load_coco_json", "load_sem_seg", "register_coco_instances"]),
    ("data.datasets.coco_panoptic", ["register_coco_panoptic", "register_coco_panoptic_separated"]),
    ("data.datasets.lvis", [
        "get_lvis_instances_meta", "load_lvis_json", "register_lvis_instances"]),
    ("data.datasets.lvis_v0_5_categories", []),
    ("data.datasets.lvis_v1_categories", []),
    ("data.datasets.lvis_v1_category_image_count", []),
    ("data.datasets.pascal_voc", ["load_voc_instances", "register_pascal_voc"]),
    ("data.datasets.register_coco", [
        "register_coco_instances", "register_coco_panoptic_separated"]),
    ("data.detection_utils", [
        "SizeMismatchError", "annotations_to_instances", "build_augmentation",
        "build_transform_gen", "check_image_size", "convert_image_to_rgb",
        "create_keypoint_hflip_indices", "filter_empty_instances", "read_image",
        "transform_instance_annotations", "transform_proposals"]),
    ("data.samplers", [
        "GroupedBatchSampler", "InferenceSampler", "RandomSubsetTrainingSampler",
        "RepeatFactorTrainingSampler", "TrainingSampler"]),
    ("data.samplers.distributed_sampler", [
        "InferenceSampler", "RandomSubsetTrainingSampler", "RepeatFactorTrainingSampler",
        "TrainingSampler"]),
    ("data.samplers.grouped_batch_sampler", ["GroupedBatchSampler"]),
    ("data.transforms", [
        "AugInput", "Augmentation", "AugmentationList", "BlendTransform", "ColorTransform",
        "CropTransform", "ExtentTransform", "FixedSizeCrop", "GridSampleTransform",
        "HFlipTransform", "MinIoURandomCrop", "NoOpTransform", "PILColorTransform", "PadTransform",
        "RandomApply", "RandomBrightness", "RandomContrast", "RandomCrop",
        "RandomCrop_CategoryAreaConstraint", "RandomExtent", "RandomFlip", "RandomLighting",
        "RandomResize", "RandomRotation", "RandomSaturation", "Resize", "ResizeScale",
        "ResizeShortestEdge", "ResizeTransform", "RotationTransform", "ScaleTransform",
        "StandardAugInput", "Transform", "TransformGen", "TransformList", "VFlipTransform",
        "apply_augmentations", "apply_transform_gens"]),
    ("data.transforms.augmentation", [
        "AugInput", "Augmentation", "AugmentationList", "StandardAugInput", "TransformGen",
        "apply_augmentations", "apply_transform_gens"]),
    ("data.transforms.augmentation_impl", [
        "FixedSizeCrop", "MinIoURandomCrop", "RandomApply", "RandomBrightness", "RandomContrast",
        "RandomCrop", "RandomCrop_CategoryAreaConstraint", "RandomExtent", "RandomFlip",
        "RandomLighting", "RandomResize", "RandomRotation", "RandomSaturation", "Resize",
        "ResizeScale", "ResizeShortestEdge"]),
    ("data.transforms.transform", [
        "ColorTransform", "ExtentTransform", "PILColorTransform", "ResizeTransform",
        "RotationTransform"]),
    ("engine", [
        "AMPTrainer", "BestCheckpointer", "CallbackHook", "DEFAULT_TIMEOUT", "DefaultPredictor",
        "DefaultTrainer", "EvalHook", "HookBase", "IterationTimer", "LRScheduler",
        "PeriodicCheckpointer", "PeriodicWriter", "SimpleTrainer", "TrainerBase",
        "create_ddp_model", "default_argument_parser", "default_setup", "default_writers", "launch"]),
    ("engine.defaults", [
        "DefaultPredictor", "DefaultTrainer", "create_ddp_model", "default_argument_parser",
        "default_setup", "default_writers"]),
    ("engine.hooks", [
        "BestCheckpointer", "CallbackHook", "EvalHook", "IterationTimer", "LRScheduler",
        "PeriodicCheckpointer", "PeriodicWriter"]),
    ("engine.launch", ["DEFAULT_TIMEOUT", "launch"]),
    ("engine.train_loop", ["AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase"]),
    ("evaluation", [
        "COCOEvaluator", "COCOPanopticEvaluator", "DatasetEvaluator", "DatasetEvaluators",
        "LVISEvaluator", "SemSegEvaluator", "inference_context", "inference_on_dataset",
        "print_csv_format", "verify_results"]),
    ("evaluation.coco_evaluation", ["COCOEvaluator", "COCOevalMaxDets", "instances_to_coco_json"]),
    ("evaluation.evaluator", [
        "DatasetEvaluator", "DatasetEvaluators", "inference_context", "inference_on_dataset"]),
    ("evaluation.lvis_evaluation", ["LVISEvaluator"]),
    ("evaluation.panoptic_evaluation", ["COCOPanopticEvaluator"]),
    ("evaluation.sem_seg_evaluation", ["SemSegEvaluator", "load_image_into_numpy_array"]),
    ("evaluation.testing", ["flatten_results_dict", "print_csv_format", "verify_results"]),
    ("layers", [
        "ASPP", "BatchNorm2d", "CNNBlockBase", "Conv2d", "ConvTranspose2d", "CycleBatchNormList",
        "DeformConv", "DepthwiseSeparableConv2d", "FrozenBatchNorm2d", "Linear",
        "ModulatedDeformConv", "NaiveSyncBatchNorm", "ROIAlign", "ROIAlignRotated", "ShapeSpec",
        "batched_nms", "batched_nms_rotated", "cat", "ciou_loss", "cross_entropy", "diou_loss",
        "empty_input_loss_func_wrapper", "get_norm", "interpolate", "move_device_like", "nms",
        "nms_rotated", "nonzero_tuple", "paste_masks_in_image", "roi_align", "roi_align_rotated",
        "shapes_to_tensor"]),
    ("layers.aspp", ["ASPP"]),
    ("layers.batch_norm", [
        "CycleBatchNormList", "FrozenBatchNorm2d", "LayerNorm", "NaiveSyncBatchNorm", "get_norm"]),
    ("layers.blocks", ["CNNBlockBase", "DepthwiseSeparableConv2d"]),
    ("layers.deform_conv", ["DeformConv", "ModulatedDeformConv"]),
    ("layers.losses", ["ciou_loss", "diou_loss"]),
    ("layers.mask_ops", ["paste_masks_in_image"]),
    ("layers.nms", ["batched_nms", "batched_nms_rotated", "nms_rotated"]),
    ("layers.roi_align", ["ROIAlign"]),
    ("layers.roi_align_rotated", ["ROIAlignRotated"]),
    ("layers.rotated_boxes", ["pairwise_iou_rotated"]),
    ("layers.shape_spec", ["ShapeSpec"]),
    ("layers.wrappers", [
        "Conv2d", "cat", "empty_input_loss_func_wrapper", "move_device_like", "nonzero_tuple",
        "shapes_to_tensor"]),
    ("model_zoo", ["get", "get_checkpoint_url", "get_config", "get_config_file"]),
    ("model_zoo.model_zoo", ["get", "get_checkpoint_url", "get_config", "get_config_file"]),
    ("modeling", [
        "ANCHOR_GENERATOR_REGISTRY", "BACKBONE_REGISTRY", "Backbone", "BaseKeypointRCNNHead",
        "BaseMaskRCNNHead", "FCOS", "FPN", "FastRCNNOutputLayers", "GeneralizedRCNN",
        "META_ARCH_REGISTRY", "MViT", "PROPOSAL_GENERATOR_REGISTRY", "PanopticFPN",
        "ProposalNetwork", "ROIHeads", "ROI_BOX_HEAD_REGISTRY", "ROI_HEADS_REGISTRY",
        "ROI_KEYPOINT_HEAD_REGISTRY", "ROI_MASK_HEAD_REGISTRY", "RPN_HEAD_REGISTRY", "ResNet",
        "ResNetBlockBase", "RetinaNet", "SEM_SEG_HEADS_REGISTRY", "SemanticSegmentor", "ShapeSpec",
        "SimpleFeaturePyramid", "StandardROIHeads", "SwinTransformer", "ViT",
        "build_anchor_generator", "build_backbone", "build_box_head", "build_keypoint_head",
        "build_mask_head", "build_model", "build_proposal_generator", "build_resnet_backbone",
        "build_roi_heads", "build_rpn_head", "build_sem_seg_head", "detector_postprocess",
        "get_vit_lr_decay_rate", "make_stage"]),
    ("modeling.anchor_generator", [
        "BufferList", "DefaultAnchorGenerator", "RotatedAnchorGenerator", "build_anchor_generator"]),
    ("modeling.backbone", [
        "BACKBONE_REGISTRY", "Backbone", "BasicStem", "BottleneckBlock", "FPN", "MViT", "RegNet",
        "ResNet", "ResNetBlockBase", "SimpleFeaturePyramid", "SwinTransformer", "ViT",
        "build_backbone", "build_resnet_backbone", "get_vit_lr_decay_rate", "make_stage"]),
    ("modeling.backbone.backbone", ["Backbone"]),
    ("modeling.backbone.build", ["build_backbone"]),
    ("modeling.backbone.fpn", [
        "FPN", "build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone"]),
    ("modeling.backbone.mvit", ["MViT"]),
    ("modeling.backbone.regnet", [
        "AnyNet", "RegNet", "ResBasicBlock", "ResBottleneckBlock", "ResStem", "SimpleStem",
        "VanillaBlock"]),
    ("modeling.backbone.resnet", [
        "BasicBlock", "BasicStem", "BottleneckBlock", "DeformBottleneckBlock", "ResNet",
        "ResNetBlockBase", "build_resnet_backbone", "make_stage"]),
    ("modeling.backbone.swin", [
        "BasicLayer", "Mlp", "PatchEmbed", "PatchMerging", "SwinTransformer",
        "SwinTransformerBlock", "WindowAttention", "window_partition", "window_reverse"]),
    ("modeling.backbone.utils", [
        "PatchEmbed", "add_decomposed_rel_pos", "get_abs_pos", "window_partition",
        "window_unpartition"]),
    ("modeling.backbone.vit", ["SimpleFeaturePyramid", "ViT", "get_vit_lr_decay_rate"]),
    ("modeling.box_regression", [
        "Box2BoxTransform", "Box2BoxTransformLinear", "Box2BoxTransformRotated"]),
    ("modeling.matcher", ["Matcher"]),
    ("modeling.meta_arch", [
        "DenseDetector", "FCOS", "GeneralizedRCNN", "META_ARCH_REGISTRY", "PanopticFPN",
        "ProposalNetwork", "RetinaNet", "SEM_SEG_HEADS_REGISTRY", "SemanticSegmentor",
        "build_model", "build_sem_seg_head"]),
    ("modeling.meta_arch.build", ["build_model"]),
    ("modeling.meta_arch.dense_detector", ["DenseDetector", "permute_to_N_HWA_K"]),
    ("modeling.meta_arch.fcos", ["FCOS"]),
    ("modeling.meta_arch.panoptic_fpn", ["PanopticFPN"]),
    ("modeling.meta_arch.rcnn", ["GeneralizedRCNN", "ProposalNetwork"]),
    ("modeling.meta_arch.retinanet", ["RetinaNet"]),
    ("modeling.meta_arch.semantic_seg", [
        "SEM_SEG_HEADS_REGISTRY", "SemSegFPNHead", "SemanticSegmentor", "build_sem_seg_head"]),
    ("modeling.poolers", ["ROIPooler"]),
    ("modeling.postprocessing", ["detector_postprocess", "sem_seg_postprocess"]),
    ("modeling.proposal_generator", [
        "PROPOSAL_GENERATOR_REGISTRY", "RPN", "RPN_HEAD_REGISTRY", "StandardRPNHead",
        "build_proposal_generator", "build_rpn_head"]),
    ("modeling.proposal_generator.build", ["build_proposal_generator"]),
    ("modeling.proposal_generator.proposal_utils", [
        "add_ground_truth_to_proposals", "add_ground_truth_to_proposals_single_image",
        "find_top_rpn_proposals"]),
    ("modeling.proposal_generator.rpn", ["RPN", "StandardRPNHead", "build_rpn_head"]),
    ("modeling.proposal_generator.rrpn", ["RRPN", "find_top_rrpn_proposals"]),
    ("modeling.roi_heads", [
        "BaseKeypointRCNNHead", "BaseMaskRCNNHead", "CascadeROIHeads", "FastRCNNConvFCHead",
        "FastRCNNOutputLayers", "KRCNNConvDeconvUpsampleHead", "MaskRCNNConvUpsampleHead",
        "ROIHeads", "ROI_BOX_HEAD_REGISTRY", "ROI_HEADS_REGISTRY", "ROI_KEYPOINT_HEAD_REGISTRY",
        "ROI_MASK_HEAD_REGISTRY", "RROIHeads", "Res5ROIHeads", "StandardROIHeads", "build_box_head",
        "build_keypoint_head", "build_mask_head", "build_roi_heads", "cascade_rcnn",
        "select_foreground_proposals"]),
    ("modeling.roi_heads.box_head", [
        "FastRCNNConvFCHead", "ROI_BOX_HEAD_REGISTRY", "build_box_head"]),
    ("modeling.roi_heads.cascade_rcnn", ["CascadeROIHeads"]),
    ("modeling.roi_heads.fast_rcnn", ["FastRCNNOutputLayers", "fast_rcnn_inference"]),
    ("modeling.roi_heads.keypoint_head", [
        "BaseKeypointRCNNHead", "KRCNNConvDeconvUpsampleHead", "ROI_KEYPOINT_HEAD_REGISTRY",
        "build_keypoint_head"]),
    ("modeling.roi_heads.mask_head", [
        "BaseMaskRCNNHead", "MaskRCNNConvUpsampleHead", "ROI_MASK_HEAD_REGISTRY", "build_mask_head"]),
    ("modeling.roi_heads.roi_heads", [
        "ROIHeads", "Res5ROIHeads", "StandardROIHeads", "build_roi_heads",
        "select_foreground_proposals", "select_proposals_with_visible_keypoints"]),
    ("modeling.roi_heads.rotated_fast_rcnn", [
        "RROIHeads", "RotatedFastRCNNOutputLayers", "fast_rcnn_inference_rotated",
        "fast_rcnn_inference_single_image_rotated"]),
    ("modeling.sampling", ["subsample_labels"]),
    ("solver", [
        "LRMultiplier", "LRScheduler", "WarmupCosineLR", "WarmupMultiStepLR",
        "WarmupParamScheduler", "build_lr_scheduler", "build_optimizer",
        "get_default_optimizer_params"]),
    ("solver.build", [
        "GradientClipType", "build_lr_scheduler", "build_optimizer", "get_default_optimizer_params",
        "maybe_add_gradient_clipping", "reduce_param_groups"]),
    ("solver.lr_scheduler", [
        "LRMultiplier", "WarmupCosineLR", "WarmupMultiStepLR", "WarmupParamScheduler"]),
    ("structures", [
        "BitMasks", "BoxMode", "Boxes", "ImageList", "Instances", "Keypoints", "PolygonMasks",
        "ROIMasks", "RotatedBoxes", "heatmaps_to_keypoints", "pairwise_ioa", "pairwise_iou",
        "pairwise_iou_rotated", "pairwise_point_box_distance", "polygons_to_bitmask"]),
    ("structures.boxes", [
        "BoxMode", "Boxes", "matched_pairwise_iou", "pairwise_intersection", "pairwise_ioa",
        "pairwise_iou", "pairwise_point_box_distance"]),
    ("structures.image_list", ["ImageList"]),
    ("structures.instances", ["Instances"]),
    ("structures.keypoints", ["Keypoints", "heatmaps_to_keypoints"]),
    ("structures.masks", [
        "BitMasks", "PolygonMasks", "ROIMasks", "polygon_area", "polygons_to_bitmask",
        "rasterize_polygons_within_box"]),
    ("structures.rotated_boxes", ["RotatedBoxes", "pairwise_iou"]),
    ("utils", []),
    ("utils.colormap", ["colormap", "random_color", "random_colors"]),
    ("utils.comm", [
        "all_gather", "create_local_process_group", "gather", "get_local_rank", "get_local_size",
        "get_rank", "get_world_size", "is_main_process", "reduce_dict", "shared_random_seed",
        "synchronize"]),
    ("utils.env", ["seed_all_rng"]),
    ("utils.events", [
        "CommonMetricPrinter", "EventStorage", "JSONWriter", "TensorboardXWriter",
        "get_event_storage", "has_event_storage"]),
    ("utils.file_io", ["PathHandler", "PathManager"]),
    ("utils.logger", ["log_every_n_seconds", "setup_logger"]),
    ("utils.registry", ["Registry", "locate"]),
    ("utils.serialize", ["PicklableWrapper"]),
    ("utils.visualizer", ["ColorMode", "VisImage", "Visualizer"]),
]

# (module path, names or None for the whole module, why workbench does not provide it).
# Not classified either way yet (their modules were being changed when the scan was made):
# config.instantiate.dump_dataclass, data.detection_utils.annotations_to_instances_rotated.
NOT_PROVIDED = [
    ("", ["setup_environment"], "workbench does no environment setup on import"),
    ("checkpoint.catalog", ["ModelCatalog", "ModelCatalogHandler"],
     "Detectron1 'catalog://' names; workbench.checkpoint.catalog resolves URLs and detectron2://"),
    ("data.benchmark", None, "data-loader benchmarking tool, not ported"),
    ("data.datasets.cityscapes", ["main"], "a command-line demo in detectron2, not API"),
    ("engine.hooks", ["AutogradProfiler", "PreciseBN", "TorchMemoryStats", "TorchProfiler"],
     "profiling and PreciseBN hooks, not ported"),
    ("engine", ["AutogradProfiler", "PreciseBN", "TorchMemoryStats", "TorchProfiler"],
     "profiling and PreciseBN hooks, not ported"),
    ("evaluation", ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator",
                    "PascalVOCDetectionEvaluator", "RotatedCOCOEvaluator"],
     "these evaluators are not ported (see their modules below)"),
    ("evaluation.cityscapes_evaluation", None, "Cityscapes evaluators (cityscapesscripts), not ported"),
    ("evaluation.fast_eval_api", None, "COCOeval_opt needs detectron2's _C; pycocotools' COCOeval is used"),
    ("evaluation.pascal_voc_evaluation", None, "Pascal VOC AP evaluator, not ported"),
    ("evaluation.rotated_coco_evaluation", None, "rotated-box COCO evaluator, not ported"),
    ("layers.wrappers", ["check_if_dynamo_compiling", "disable_torch_compiler"],
     "torch.compile helpers for detectron2's own code"),
    ("modeling", ["DatasetMapperTTA", "GeneralizedRCNNWithTTA", "MMDetBackbone", "MMDetDetector"],
     "test-time augmentation and mmdetection wrappers, not ported"),
    ("modeling.mmdet_wrapper", None, "wraps mmdetection models; needs mmdet/mmcv"),
    ("modeling.test_time_augmentation", None, "test-time augmentation, not ported"),
    ("utils.analysis", None, "fvcore-based FLOP / activation / parameter counting, not ported"),
    ("utils.collect_env", None, "environment report centred on detectron2's compiled _C"),
    ("utils.comm", ["get_local_process_group"], "no per-machine process group in workbench.utils.comm"),
    ("utils.develop", None, "dummy classes for detectron2's optional dependencies"),
    ("utils.logger", ["log_every_n", "log_first_n"], "rate-limited logging helpers, not ported"),
    ("utils.memory", None, "retry_if_cuda_oom, not ported"),
    ("utils.testing", None, "detectron2's own test helpers (TorchScript / ONNX export)"),
    ("utils.torch_version_utils", None, "torch-version gates for detectron2's own code"),
    ("utils.tracing", None, "FX / TorchScript tracing helpers; workbench does not trace for export"),
    ("utils.video_visualizer", None, "VideoVisualizer (tracking colours across frames), not ported"),
]


@pytest.mark.parametrize("path,names", PROVIDED, ids=[p or "detectron2" for p, _ in PROVIDED])
def test_workbench_provides_detectron2_path(path, names):
    module = importlib.import_module("workbench." + path if path else "workbench")
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"workbench.{path} lacks {missing}"


@pytest.mark.parametrize("path,names,reason", NOT_PROVIDED,
                         ids=[f"{p or 'detectron2'}:{','.join(n) if n else '*'}" for p, n, _ in NOT_PROVIDED])
def test_not_provided_list_is_still_true(path, names, reason):
    assert reason
    name = "workbench." + path if path else "workbench"
    if names is None:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)
    else:
        module = importlib.import_module(name)
        present = [n for n in names if hasattr(module, n)]
        assert not present, f"{name} now has {present}: move them to PROVIDED"


def test_lists_do_not_overlap():
    provided = {(p, n) for p, names in PROVIDED for n in names}
    absent = {(p, n) for p, names, _ in NOT_PROVIDED for n in (names or [])}
    assert not provided & absent
    whole = {p for p, names, _ in NOT_PROVIDED if names is None}
    assert not whole & {p for p, _ in PROVIDED}


@pytest.mark.parametrize("path,target", [
    ("utils.visualizer", "workbench.vis.visualizer"),
    ("modeling.postprocessing", "workbench.modeling.meta_arch.postprocessing"),
    ("layers.mask_ops", "workbench.structures.mask_ops"),
    ("data.datasets.register_coco", None),
])
def test_reexport_modules_are_thin(path, target):
    """A module added only for detectron2's path says so and holds no second implementation."""
    module = importlib.import_module("workbench." + path)
    assert "detectron2's path" in module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        assert getattr(obj, "__module__", None) != module.__name__, name
        if target is not None and name != "random_color":
            assert obj is getattr(importlib.import_module(target), name)


def test_same_objects_at_both_paths():
    from workbench.layers import paste_masks_in_image, nms_rotated, CycleBatchNormList
    from workbench.layers import batch_norm, mask_ops
    from workbench.modeling import make_stage, ResNetBlockBase
    from workbench.modeling.backbone import resnet
    from workbench.modeling.roi_heads import RROIHeads
    from workbench.modeling.roi_heads.rotated_fast_rcnn import RROIHeads as rroi
    from workbench.structures.mask_ops import paste_masks_in_image as paste
    from workbench.utils.visualizer import ColorMode, Visualizer, random_color
    from workbench.vis import masks, visualizer
    from workbench.utils import colormap

    assert paste_masks_in_image is mask_ops.paste_masks_in_image is paste
    nms = importlib.import_module("workbench.layers.nms")  # workbench.layers.nms is the function
    assert nms.nms_rotated is nms_rotated and batch_norm.CycleBatchNormList is CycleBatchNormList
    assert make_stage is resnet.make_stage and ResNetBlockBase is resnet.ResNetBlockBase
    assert RROIHeads is rroi
    assert Visualizer is visualizer.Visualizer and ColorMode is masks.ColorMode
    assert random_color is colormap.random_color


def test_colormap_is_detectron2s():
    import numpy as np

    from workbench.utils.colormap import colormap, random_color, random_colors

    rgb = colormap(rgb=True, maximum=1)
    assert rgb.shape == (74, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[:2], [[0.000, 0.447, 0.741], [0.850, 0.325, 0.098]], atol=1e-6)
    np.testing.assert_allclose(rgb[-1], [1.0, 1.0, 1.0])
    bgr = colormap()  # detectron2's defaults: BGR in [0, 255]
    np.testing.assert_allclose(bgr[0], [0.741 * 255, 0.447 * 255, 0.0], rtol=1e-6)
    c = random_color(rgb=True, maximum=1)
    assert c.shape == (3,) and any(np.allclose(c, row) for row in rgb)
    cs = random_colors(5, rgb=True, maximum=1)
    assert len(cs) == 5 and len({tuple(x) for x in cs}) == 5
    with pytest.raises(AssertionError):
        colormap(maximum=100)


def test_detectron2_imports_through_the_alias():
    code = """
        import workbench.compat
        workbench.compat.install()
        from detectron2.utils.visualizer import Visualizer, ColorMode
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.layers.mask_ops import paste_masks_in_image
        from detectron2.layers import paste_masks_in_image as p2
        from detectron2.utils.colormap import random_color
        from detectron2.modeling.roi_heads import RROIHeads
        from detectron2.utils.registry import locate
        import workbench.vis.visualizer as V, workbench.vis.masks as M
        import workbench.modeling.meta_arch.postprocessing as P
        import workbench.structures.mask_ops as S
        import workbench.modeling.roi_heads.rotated_fast_rcnn as R
        print(Visualizer is V.Visualizer, ColorMode is M.ColorMode,
              detector_postprocess is P.detector_postprocess,
              paste_masks_in_image is p2 is S.paste_masks_in_image,
              RROIHeads is R.RROIHeads,
              locate("detectron2.utils.visualizer.Visualizer") is V.Visualizer,
              Visualizer.__module__, callable(random_color))
        """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True"] * 6 + ["workbench.vis.visualizer", "True"]
