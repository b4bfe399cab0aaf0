"""detectron2's model zoo: shipped config files, checkpoint URLs and one-call model building.

Example::

    from workbench import model_zoo

    cfg = model_zoo.get_config("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", trained=True)
    model = model_zoo.get("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", trained=True)

    # LazyConfig (.py) entries, including the ViTDet / MViTv2 project configs: a DictConfig.
    lazy_cfg = model_zoo.get_config("ViTDet/COCO/mask_rcnn_vitdet_b_100ep.py")

    # workbench's own embedded model: trained by the project, its weights ship in the package.
    model = model_zoo.get("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True)
"""

from .model_zoo import embedded_weights_path, get, get_checkpoint_url, get_config, get_config_file, list_configs

__all__ = ["embedded_weights_path", "get", "get_checkpoint_url", "get_config", "get_config_file", "list_configs"]
