"""Loader of the optional compiled ops (`glip._C`); None when not built or disabled with GLIP_DISABLE_EXT=1."""
import functools
import logging
import os

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def load():
    """The `glip._C` module, or None (not built, failed to import, or GLIP_DISABLE_EXT=1)."""
    if os.environ.get("GLIP_DISABLE_EXT", "0") not in ("", "0"):
        return None
    try:
        from glip import _C  # noqa: F401
    except ImportError as err:
        logger.debug("glip._C not available (%s); using the PyTorch fallbacks", err)
        return None
    return _C
