"""Configuration: the yacs defaults (``cfg``), the dataset catalog and path lookup.

``cfg`` is the process-wide default node; tools and tests ``cfg.clone()`` it before merging.
"""
from glip.config.defaults import _C as cfg
from glip.config.node import CfgNode
from glip.config.paths_catalog import DatasetCatalog, try_to_find

__all__ = ["cfg", "CfgNode", "DatasetCatalog", "try_to_find"]
