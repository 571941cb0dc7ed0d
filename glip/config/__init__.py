"""Configuration: the yacs defaults (``cfg``), :func:`get_config`, the dataset catalog and path lookup.

``cfg`` is the process-wide default node; tools and tests ``cfg.clone()`` it before merging.
"""
from typing import Optional, Sequence

from glip.config.defaults import _C as cfg
from glip.config.node import CfgNode
from glip.config.paths_catalog import DatasetCatalog, try_to_find


def get_config(config_file: Optional[str] = None, opts: Sequence = ()) -> CfgNode:
    """A frozen copy of the defaults with the yaml ``config_file`` and then ``opts`` (``[KEY, VALUE, ...]``, as on
    the tools' command lines) merged in; the defaults themselves are not changed."""
    merged = cfg.clone()
    merged.defrost()
    if config_file:
        merged.merge_from_file(str(config_file))
    merged.merge_from_list(list(opts))
    merged.freeze()
    return merged


__all__ = ["cfg", "get_config", "CfgNode", "DatasetCatalog", "try_to_find"]
