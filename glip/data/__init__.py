"""Data: datasets by catalog name, transforms, samplers, batches (:class:`Batch`) and the loaders
(:func:`make_data_loader`, the reference's ``maskrcnn_benchmark.data.make_data_loader``). Names are imported on
first use."""
from glip.utils.lazy import lazy_exports

EXPORTS = {
    "make_data_loader": "glip.data.build",
    "build_dataset": "glip.data.build",
    "Batch": "glip.data.collate",
    "BatchCollator": "glip.data.collate",
}

__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
