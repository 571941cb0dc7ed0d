"""ODinW-style aggregation: per-dataset box AP of several task evaluations and their mean.

Each task result may be an `EvalResult` (from `inference`), a `COCOResults` (from `do_coco_evaluation`), a metrics
dict (`{"AP": ..}`), a plain number, or the path of a `bbox.csv` the evaluation wrote (read back with
`read_bbox_csv`). The summary is itself an `EvalResult` (protocol "odinw", primary "mean").
"""
import glob
import logging
import os
import re
from collections import OrderedDict

from glip.evaluation.evaluator import EvalResult

logger = logging.getLogger(__name__)

_ROW = re.compile(r"Average Precision\s+\(AP\) @\[ IoU=(?P<iou>[0-9.:]+)\s*\| area=\s*(?P<area>\w+) \| "
                  r"maxDets=\s*(?P<dets>-?\d+) \], (?P<values>[^A]*)")
_AREA_KEYS = {"all": "", "small": "s", "medium": "m", "large": "l"}


def read_bbox_csv(path):
    """COCO `bbox.csv` -> `OrderedDict` AP/AP50/APs/APm/APl -> the "avg" column (-1 for a row without values)."""
    with open(path) as f:
        text = f.read()
    metrics = OrderedDict()
    for match in _ROW.finditer(text):
        key = "AP" + ("50" if match.group("iou") == "0.50" else "") + _AREA_KEYS[match.group("area")]
        values = [v.strip() for v in match.group("values").split(",") if v.strip()]
        metrics[key] = float(values[-1]) if values else -1.0
    return metrics


def task_ap(result, metric="AP"):
    """The `metric` of one task result (see module doc)."""
    if isinstance(result, EvalResult):
        metrics = result.metrics
        return float(metrics[metric] if metric in metrics else metrics["bbox/" + metric])
    if isinstance(result, (int, float)):
        return float(result)
    if isinstance(result, (str, os.PathLike)):
        return read_bbox_csv(result)[metric]
    if isinstance(result, tuple):
        result = result[0]
    if hasattr(result, "results"):
        result = result.results["bbox"]
    if isinstance(result, dict) and "bbox" in result and isinstance(result["bbox"], dict):
        result = result["bbox"]
    return float(result[metric])


def summarize_tasks(task_results, metric="AP") -> EvalResult:
    """`{dataset name: result}` -> `EvalResult` whose metrics are each dataset's `metric` (input order) plus
    `"mean"` (the primary metric).

    Logs a two-column table (dataset, metric).
    """
    summary = OrderedDict((name, task_ap(result, metric)) for name, result in task_results.items())
    summary["mean"] = sum(summary.values()) / len(task_results) if task_results else float("nan")
    width = max([len(name) for name in summary] + [7])
    lines = ["{:<{w}}  {}".format("dataset", metric, w=width)]
    lines += ["{:<{w}}  {:.4f}".format(name, value, w=width) for name, value in summary.items()]
    logger.info("ODinW summary:\n%s", "\n".join(lines))
    return EvalResult("odinw", summary, "mean")


def find_bbox_csvs(output_dir):
    """`{dataset name: path}` of every `<output_dir>/**/inference/<dataset>/bbox.csv` (sorted by path)."""
    pattern = os.path.join(output_dir, "**", "inference", "*", "bbox.csv")
    found = OrderedDict()
    for path in sorted(glob.glob(pattern, recursive=True)):
        found[os.path.basename(os.path.dirname(path))] = path
    return found
