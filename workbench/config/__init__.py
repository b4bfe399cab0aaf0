"""Configuration: detectron2's yacs config tree, the ``@configurable`` decorator, and LazyConfig
(``.py`` / omegaconf configs built with ``LazyCall`` and ``instantiate``).

``get_cfg()`` returns detectron2's full default tree; model-zoo YAML files, detectron2
``cfg.dump()`` output and ``KEY VALUE`` lists merge into it with key and type checking.
"""

from .config import CfgNode, ConfigKeyError, get_cfg, global_cfg, set_global_cfg
from .configurable import configurable
from .compat import downgrade_config, upgrade_config
from .instantiate import instantiate, partial_of
from .lazy import LazyCall, LazyConfig
from .validate import ConfigValueError, check_config_values

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "ConfigValueError",
    "check_config_values",
    "configurable",
    "downgrade_config",
    "get_cfg",
    "global_cfg",
    "instantiate",
    "LazyCall",
    "LazyConfig",
    "partial_of",
    "set_global_cfg",
    "upgrade_config",
]
