# Copied unchanged from detectron2 (github.com/facebookresearch/detectron2): configs/new_baselines/mask_rcnn_R_101_FPN_100ep_LSJ.py
from .mask_rcnn_R_50_FPN_100ep_LSJ import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.backbone.bottom_up.stages.depth = 101
