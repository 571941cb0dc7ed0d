"""Solver: :func:`make_optimizer` and :func:`make_lr_scheduler` (the reference's ``maskrcnn_benchmark.solver``
names). Names are imported on first use."""
from glip.utils.lazy import lazy_exports

EXPORTS = {
    "make_optimizer": "glip.solver.build",
    "make_lr_scheduler": "glip.solver.build",
}

__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
