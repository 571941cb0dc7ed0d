"""Dataset evaluation: `evaluate(dataset, predictions, output_folder, **kwargs)` picks the protocol.

Kinds (`dataset_kind`):
- "coco": COCO / ODinW / any COCO-json dataset — `dataset.coco` (pycocotools COCO, or None for a gt-less dump),
  `dataset.id_to_img_map` (index -> json image id), `dataset.contiguous_category_id_to_json_id`,
  `dataset.get_img_info(index)`; predictions: list by dataset index or dict index -> BoxList (`scores`,
  `labels` contiguous ids). Returns `(COCOResults, coco_results)` (see `glip.evaluation.coco`).
- "lvis": LVIS v1 — the gt json from `dataset.ann_file` (or `dataset.coco.dataset`), `id_to_img_map`,
  `get_img_info(index)` (`width`, `height`); predictions as above with `labels` = LVIS category ids. Keyword
  `fixed_ap` (default True), `topk` (10000). Writes `bbox.csv`; returns the metrics dict (AP, APr, ...).
Flickr30k grounding is per sentence and is driven by `glip.evaluation.flickr.FlickrEvaluator` directly.
"""
import logging
import os

logger = logging.getLogger(__name__)


def dataset_kind(dataset):
    """ "lvis" for LVIS datasets (class name starting with "Lvis"), "coco" for anything with a `coco` attribute."""
    if type(dataset).__name__.lower().startswith("lvis"):
        return "lvis"
    if hasattr(dataset, "coco"):
        return "coco"
    raise NotImplementedError("Unsupported dataset type {}.".format(type(dataset).__name__))


def evaluate(dataset, predictions, output_folder, kind=None, **kwargs):
    """Evaluate `predictions` on `dataset` with the protocol of its kind (`kind` overrides the detection)."""
    kind = kind or dataset_kind(dataset)
    if kind == "coco":
        from glip.evaluation.coco import do_coco_evaluation

        return do_coco_evaluation(dataset=dataset, predictions=predictions, output_folder=output_folder, **kwargs)
    if kind == "lvis":
        return _lvis_evaluation(dataset, predictions, output_folder, **kwargs)
    raise NotImplementedError("Unsupported evaluation kind {}.".format(kind))


def _lvis_evaluation(dataset, predictions, output_folder, fixed_ap=True, topk=10000, **_):
    from glip.evaluation.coco import indexed_predictions
    from glip.evaluation.lvis import LvisFixedAPEvaluator, write_lvis_results

    gt = getattr(dataset, "ann_file", None) or dataset.coco.dataset
    evaluator = LvisFixedAPEvaluator(gt, topk=topk, fixed_ap=fixed_ap)
    batch = []
    for index, prediction in indexed_predictions(predictions):
        info = dataset.get_img_info(index)
        prediction = prediction.resize((info["width"], info["height"])).convert("xyxy")
        batch.append((dataset.id_to_img_map[index], {"boxes": prediction.bbox, "scores": prediction.get_field(
            "scores"), "labels": prediction.get_field("labels")}))
    evaluator.update(batch)
    lines = evaluator.summarize()
    if output_folder and lines is not None:
        os.makedirs(output_folder, exist_ok=True)
        write_lvis_results(lines, os.path.join(output_folder, "bbox.csv"))
    return evaluator.results
