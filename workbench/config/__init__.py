"""Configuration: detectron2's yacs config tree and the ``@configurable`` decorator.

``get_cfg()`` returns detectron2's full default tree; model-zoo YAML files, detectron2
``cfg.dump()`` output and ``KEY VALUE`` lists merge into it with key and type checking.
"""

from .config import CfgNode, ConfigKeyError, get_cfg, global_cfg, set_global_cfg
from .configurable import configurable

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "configurable",
    "get_cfg",
    "global_cfg",
    "set_global_cfg",
]
