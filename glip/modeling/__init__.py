"""Modeling: the GLIP detector (:func:`build_detection_model` -> ``GeneralizedVLRCNN``) and its parts (backbone,
language backbone, head). Names are imported on first use."""
from glip.utils.lazy import lazy_exports

EXPORTS = {
    "build_detection_model": "glip.modeling.detector",
    "GeneralizedVLRCNN": "glip.modeling.detector",
}

__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
