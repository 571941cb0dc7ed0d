"""COCO-style box evaluation (COCO, ODinW, any registered COCO-json dataset) through pycocotools.

Predictions are per-image `BoxList`s (fields `scores`, `labels` = contiguous category ids) in the network's or
the original image's coordinates; they are resized to the original size recorded in the gt json, converted to
"xywh" with the legacy +1 width rule of `BoxList.convert`, and written as the reference writes them:
`bbox.json` (the COCO results list) and `bbox.csv` (per-category AP table), plus `coco_results.pth`.
`CocoEvaluator` is the protocol "coco" of `glip.evaluation.evaluator`: it also writes `predictions.pth`.
"""
import contextlib
import io
import json
import logging
import os
import tempfile
from collections import OrderedDict

import numpy as np
import torch

from glip.evaluation.evaluator import DatasetEvaluator, as_int, indexed_predictions, register_evaluator
from glip.utils.comm import all_gather, is_main_process

logger = logging.getLogger(__name__)

_METRICS = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl"),
}


class COCOResults:
    """Summary numbers per iou type: `results["bbox"]["AP"]` etc. (-1 until filled from a `COCOeval`)."""

    METRICS = _METRICS

    def __init__(self, *iou_types):
        unknown = [t for t in iou_types if t not in _METRICS]
        if unknown:
            raise ValueError("unsupported iou types {}".format(unknown))
        self.results = OrderedDict((t, OrderedDict((m, -1) for m in _METRICS[t])) for t in iou_types)

    def update(self, coco_eval):
        """Copy the leading `coco_eval.stats` into the metrics of its iou type."""
        if coco_eval is None:
            return
        iou_type = coco_eval.params.iouType
        for idx, metric in enumerate(_METRICS[iou_type]):
            self.results[iou_type][metric] = float(coco_eval.stats[idx])

    def __repr__(self):
        return repr(self.results)


def prepare_for_coco_detection(predictions, dataset):
    """COCO results `[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`.

    `dataset` provides `id_to_img_map` (index -> json image id), `coco.imgs[id]["width"/"height"]` and
    `contiguous_category_id_to_json_id`; detections whose label has no json id are dropped (as the reference).
    """
    id_map = dataset.id_to_img_map
    label_map = dataset.contiguous_category_id_to_json_id
    results = []
    for index, prediction in indexed_predictions(predictions):
        original_id = id_map[index]
        if len(prediction) == 0:
            continue
        info = dataset.coco.imgs[original_id]
        prediction = prediction.resize((info["width"], info["height"])).convert("xywh")
        boxes = prediction.bbox.tolist()
        scores = prediction.get_field("scores").tolist()
        labels = prediction.get_field("labels").tolist()
        for box, score, label in zip(boxes, scores, labels):
            if label in label_map:
                results.append({"image_id": original_id, "category_id": label_map[label], "bbox": box,
                                "score": score})
    return results


def prepare_for_tsv_detection(predictions, dataset):
    """Proposal-style dump `{"images": [...], "annotations": [...]}` for datasets without a COCO gt.

    Uses `dataset.get_img_info(index)` (`id`, `width`, `height`); labels are written unmapped.
    """
    annotations, images = [], []
    for index, prediction in indexed_predictions(predictions):
        info = dataset.get_img_info(index)
        if len(prediction) == 0:
            continue
        width, height = info["width"], info["height"]
        prediction = prediction.resize((width, height)).convert("xywh")
        centers = prediction.get_field("centers") if prediction.has_field("centers") else None
        scores = prediction.get_field("scores").tolist()
        labels = prediction.get_field("labels").tolist()
        for k, box in enumerate(prediction.bbox.tolist()):
            record = {"image_id": info["id"], "category_id": labels[k], "bbox": box, "score": scores[k],
                      "area": width * height, "iscrowd": 0}
            if centers is not None:
                record["center"] = centers[k].tolist()
            annotations.append(record)
        images.append(info)
    return {"images": images, "annotations": annotations}


def _summary_row(coco_eval, iou_thr=None, area="all", max_dets=100):
    """One `bbox.csv` row: the metric label, the AP of every category, their average (the reference's layout).

    Per-category values are plain means over the precision slice (absent entries, -1, included), exactly as the
    reference computes them; when no category has any valid entry the row is the label alone, without newline.
    """
    params = coco_eval.params
    iou_str = "{:0.2f}:{:0.2f}".format(params.iouThrs[0], params.iouThrs[-1]) if iou_thr is None \
        else "{:0.2f}".format(iou_thr)
    row = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ], ".format(
        "Average Precision", "(AP)", iou_str, area, max_dets)
    area_idx = [i for i, label in enumerate(params.areaRngLbl) if label == area]
    det_idx = [i for i, m in enumerate(params.maxDets) if m == max_dets]
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    if iou_thr is not None:
        precision = precision[np.where(iou_thr == params.iouThrs)[0]]
    precision = precision[:, :, :, area_idx, det_idx]
    if len(precision[precision > -1]) == 0:
        return row
    num_classes = len(params.catIds)
    total = 0.0
    for k in range(num_classes):
        value = np.mean(precision[:, :, k, :])
        row += "{}, ".format(value)
        total += value
    return row + "{} \n".format(total / num_classes)


def summarize_per_category(coco_eval, csv_output):
    """Write the reference's `bbox.csv`: a header of category names then AP, AP50, APs, APm, APl rows."""
    names = {cat["id"]: cat["name"] for cat in coco_eval.cocoGt.cats.values()}
    header = "metric, " + "".join("{}, ".format(names[c]) for c in coco_eval.params.catIds) + "avg \n"
    last = coco_eval.params.maxDets[2]
    rows = [header, _summary_row(coco_eval), _summary_row(coco_eval, iou_thr=0.5, max_dets=last),
            _summary_row(coco_eval, area="small", max_dets=last),
            _summary_row(coco_eval, area="medium", max_dets=last),
            _summary_row(coco_eval, area="large", max_dets=last)]
    with open(csv_output, "w") as f:
        f.writelines(rows)


def evaluate_predictions_on_coco(coco_gt, coco_results, json_result_file, iou_type="bbox"):
    """Write `coco_results` to `json_result_file`, run COCOeval and (bbox) write the sibling `.csv`.

    Returns the `COCOeval` after `summarize()`; its printed table is routed to the log. No results: every
    category with gt scores 0 (an empty detection set, as the reference).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    json_result_file = str(json_result_file)
    with open(json_result_file, "w") as f:
        json.dump(coco_results, f)
    coco_gt.dataset.setdefault("info", {})  # recent pycocotools' loadRes copies it; many task jsons lack it
    progress, table = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(progress):  # pycocotools prints its progress
        coco_dt = coco_gt.loadRes(json_result_file) if coco_results else COCO()
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
    with contextlib.redirect_stdout(table):
        coco_eval.summarize()
    logger.debug(progress.getvalue())
    logger.info("COCOeval %s:\n%s", iou_type, table.getvalue())
    if iou_type == "bbox":
        summarize_per_category(coco_eval, os.path.splitext(json_result_file)[0] + ".csv")
    return coco_eval


def do_coco_evaluation(dataset, predictions, output_folder=None, iou_types=("bbox",), box_only=False,
                       expected_results=(), expected_results_sigma_tol=4, **kwargs):
    """Evaluate `predictions` (list by dataset index, or dict index -> BoxList) on a COCO-like `dataset`.

    `dataset` needs `coco` (pycocotools COCO, or None for a gt-less TSV dataset: only a dump is written),
    `id_to_img_map`, `contiguous_category_id_to_json_id` and `get_img_info(index)`. Writes
    `<output_folder>/bbox.json`, `bbox.csv` and `coco_results.pth`. Returns `(COCOResults, coco_results)`,
    e.g. `results.results["bbox"]["AP"]`.
    """
    check_supported(iou_types, box_only)
    if output_folder:
        os.makedirs(output_folder, exist_ok=True)
    logger.info("Preparing bbox results")
    if dataset.coco is None:
        coco_results = {"bbox": prepare_for_tsv_detection(predictions, dataset)}
    else:
        coco_results = {"bbox": prepare_for_coco_detection(predictions, dataset)}
    results = COCOResults(*iou_types)
    logger.info("Evaluating predictions")
    for iou_type in iou_types:
        if dataset.coco is None:
            if output_folder:
                with open(os.path.join(output_folder, iou_type + ".json"), "w") as f:
                    json.dump(coco_results[iou_type], f)
            continue
        if output_folder:
            results.update(evaluate_predictions_on_coco(dataset.coco, coco_results[iou_type],
                                                        os.path.join(output_folder, iou_type + ".json"), iou_type))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                results.update(evaluate_predictions_on_coco(dataset.coco, coco_results[iou_type],
                                                            os.path.join(tmp, iou_type + ".json"), iou_type))
    logger.info(results)
    check_expected_results(results, expected_results, expected_results_sigma_tol)
    if output_folder:
        torch.save(results, os.path.join(output_folder, "coco_results.pth"))
    return results, coco_results


def check_expected_results(results, expected_results, sigma_tol):
    """Log PASS/FAIL for each `(iou_type, metric, (mean, std))` against `mean +- sigma_tol * std`."""
    for task, metric, (mean, std) in expected_results or ():
        value = results.results[task][metric]
        low, high = mean - sigma_tol * std, mean + sigma_tol * std
        ok = low < value < high
        message = "{} > {} sanity check (actual vs. expected): {:.3f} vs. mean={:.4f}, std={:.4}, " \
                  "range=({:.4f}, {:.4f})".format(task, metric, value, mean, std, low, high)
        (logger.info if ok else logger.error)(("PASS: " if ok else "FAIL: ") + message)


def check_supported(iou_types, box_only):
    """Refuse proposal (`box_only`) and non-bbox evaluation by name."""
    if box_only:
        raise NotImplementedError("proposal (box_only) evaluation is not part of GLIP's evaluation")
    unsupported = [t for t in iou_types if t != "bbox"]
    if unsupported:
        raise NotImplementedError("only bbox evaluation is implemented, got {}".format(unsupported))


def accumulate_predictions(predictions_per_process: dict):
    """Gather `{dataset index: prediction}` from every process; on rank 0 the list ordered by index, else None."""
    gathered = all_gather(predictions_per_process)
    if not is_main_process():
        return None
    merged = {}
    for part in gathered:
        merged.update(part)
    indices = sorted(merged)
    if indices and len(indices) != indices[-1] + 1:
        logger.warning("Number of images gathered from the processes is not a contiguous set; "
                       "some images might be missing from the evaluation")
    return [merged[i] for i in indices]


@register_evaluator("coco")
class CocoEvaluator(DatasetEvaluator):
    """COCO box AP of a COCO-json `dataset` (see `do_coco_evaluation` for what it needs).

    Collects `{dataset index: BoxList}` (network-input pixels), gathers it on the main process as the list
    ordered by index, saves it as `<output_folder>/predictions.pth` and evaluates it (`bbox.json`, `bbox.csv`,
    `coco_results.pth`). Metrics `"<iou type>/<metric>"` (`bbox/AP`, `bbox/AP50`, ...); primary `bbox/AP`;
    details `(COCOResults, coco_results)`.
    """

    primary_metric = "bbox/AP"

    def __init__(self, dataset, output_folder=None, iou_types=("bbox",), box_only=False, expected_results=(),
                 expected_results_sigma_tol=4):
        check_supported(iou_types, box_only)
        self.dataset = dataset
        self.output_folder = output_folder
        self.iou_types = tuple(iou_types)
        self.expected_results = expected_results
        self.expected_results_sigma_tol = expected_results_sigma_tol
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset, output_folder=None, iou_types=("bbox",), box_only=False, expected_results=(),
                    expected_results_sigma_tol=4, **_):
        return cls(dataset, output_folder, iou_types, box_only, expected_results, expected_results_sigma_tol)

    def reset(self):
        self._predictions = {}

    def process(self, indices, targets, outputs):
        self._predictions.update({as_int(i): output for i, output in zip(indices, outputs)})

    def evaluate(self):
        predictions = accumulate_predictions(self._predictions)
        if not is_main_process():
            return None
        if self.output_folder:
            os.makedirs(self.output_folder, exist_ok=True)
            torch.save(predictions, os.path.join(self.output_folder, "predictions.pth"))
        results, coco_results = do_coco_evaluation(
            self.dataset, predictions, self.output_folder, iou_types=self.iou_types,
            expected_results=self.expected_results, expected_results_sigma_tol=self.expected_results_sigma_tol)
        metrics = {"{}/{}".format(iou_type, name): float(value)
                   for iou_type, per_type in results.results.items() for name, value in per_type.items()}
        return self.result(metrics, (results, coco_results))
