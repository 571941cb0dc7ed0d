"""Boxes and image batches: `BoxList`, `ImageList`/`to_image_list` and box operations (`boxlist_ops`). Names are
imported on first use."""
from glip.utils.lazy import lazy_exports

EXPORTS = {
    "BoxList": "glip.structures.bounding_box",
    "ImageList": "glip.structures.image_list",
    "to_image_list": "glip.structures.image_list",
}

__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
