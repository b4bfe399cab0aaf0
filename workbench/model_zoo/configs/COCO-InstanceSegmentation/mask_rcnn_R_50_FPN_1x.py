# Copied unchanged from detectron2 (github.com/facebookresearch/detectron2): configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py
from ..common.optim import SGD as optimizer
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
