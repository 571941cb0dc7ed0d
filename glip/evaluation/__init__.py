"""Dataset evaluation: one `DatasetEvaluator` per protocol, chosen by the dataset's `evaluation_protocol`.

Protocols (`EVALUATORS`, see `glip.evaluation.evaluator`):
- "coco" (`CocoEvaluator`): COCO / ODinW / any COCO-json dataset; box AP through pycocotools.
- "lvis" (`LvisEvaluator`): LVIS v1, Fixed AP (or the standard AP with `DATASETS.LVIS_USE_NORMAL_AP`).
- "flickr" (`FlickrEvaluator`): Flickr30k Entities phrase grounding, Recall@1/5/10.
The ODinW summary over several datasets (per-dataset AP and the mean) is `glip.evaluation.odinw.summarize_tasks`.

`evaluate(dataset, predictions, output_folder, **kwargs)` evaluates saved predictions (list by dataset index or
dict index -> BoxList) with the protocol of `dataset`; `kwargs` go to the evaluator's constructor.
"""
from glip.evaluation import coco, flickr, lvis  # noqa: F401  (each registers its protocol)
from glip.evaluation.evaluator import (
    EVALUATORS,
    DatasetEvaluator,
    EvalResult,
    build_evaluator,
    evaluator_class,
    indexed_predictions,
    protocol_of,
    register_evaluator,
)

__all__ = ["EVALUATORS", "DatasetEvaluator", "EvalResult", "build_evaluator", "evaluate", "evaluator_class",
           "protocol_of", "register_evaluator"]


def evaluate(dataset, predictions, output_folder, protocol=None, **kwargs) -> EvalResult:
    """Evaluate `predictions` on `dataset` with its protocol (`protocol` overrides it), as one batch without
    targets (boxes resized with the dataset's image info)."""
    cls = evaluator_class(protocol or protocol_of(dataset))
    evaluator = cls(dataset, output_folder=output_folder, **kwargs)
    items = indexed_predictions(predictions)
    evaluator.process([index for index, _ in items], [None] * len(items), [p for _, p in items])
    return evaluator.evaluate()
