"""Engine: training (:func:`train`, :func:`do_train`), evaluation runs (:func:`run_test`; the loop is
``glip.engine.inference.inference``), checkpoints and weights, the demo predictor. Names are imported on first
use."""
from glip.utils.lazy import lazy_exports

EXPORTS = {
    "train": "glip.engine.run",
    "run_test": "glip.engine.run",
    "do_train": "glip.engine.trainer",
    "Trainer": "glip.engine.trainer",
    "Checkpointer": "glip.engine.checkpointer",
    "load_weights": "glip.engine.weights",
    "GLIPDemo": "glip.engine.predictor",
}

__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
