"""ODinW aggregation: per-dataset AP from the several result forms, and their mean."""
from collections import OrderedDict
from pathlib import Path

import pytest

from glip.evaluation.coco import COCOResults
from glip.evaluation.evaluator import EvalResult
from glip.evaluation.odinw import find_bbox_csvs, read_bbox_csv, summarize_tasks, task_ap

GOLDEN_CSV = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "end_to_end" / "golden" / "bbox.csv"

# a csv with the reference's quirk: a row whose range has no gt at all carries no values and no newline
QUIRKY_CSV = ("metric, a, b, avg \n"
              " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ], 0.5, 0.25, 0.375 \n"
              " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ], 0.75, 0.5, 0.625 \n"
              " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ], "
              " Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ], 0.5, -1.0, -0.25 \n"
              " Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ], 1.0, 1.0, 1.0 \n")


def test_read_reference_csv():
    metrics = read_bbox_csv(GOLDEN_CSV)
    assert list(metrics) == ["AP", "AP50", "APs", "APm", "APl"]
    assert metrics["AP"] == 2.6921611080026917e-05
    assert metrics["AP50"] == 0.00018001800180018


def test_read_quirky_csv(tmp_path):
    path = tmp_path / "bbox.csv"
    path.write_text(QUIRKY_CSV)
    assert read_bbox_csv(path) == OrderedDict([("AP", 0.375), ("AP50", 0.625), ("APs", -1.0), ("APm", -0.25),
                                               ("APl", 1.0)])


def test_summarize_tasks_mean_over_forms(tmp_path):
    csv = tmp_path / "eval" / "w" / "inference" / "task_c" / "bbox.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text(QUIRKY_CSV)
    coco_results = COCOResults("bbox")
    coco_results.results["bbox"]["AP"] = 0.5
    tasks = OrderedDict([("task_a", coco_results), ("task_b", {"AP": 0.25}), ("task_c", str(csv)),
                         ("task_d", 0.125), ("task_e", EvalResult("coco", {"bbox/AP": 0.75, "bbox/AP50": 1.0},
                                                                  "bbox/AP")),
                         ("task_f", EvalResult("lvis", {"AP": 0.0625, "APr": 0.5}, "AP"))])
    result = summarize_tasks(tasks)
    summary = result.metrics
    assert list(summary) == ["task_a", "task_b", "task_c", "task_d", "task_e", "task_f", "mean"]
    assert summary["task_c"] == 0.375 and summary["task_e"] == 0.75 and summary["task_f"] == 0.0625
    assert summary["mean"] == pytest.approx((0.5 + 0.25 + 0.375 + 0.125 + 0.75 + 0.0625) / 6)
    assert result.protocol == "odinw" and result.score == summary["mean"]
    assert summarize_tasks(OrderedDict([("task_e", tasks["task_e"])]), "AP50").metrics["task_e"] == 1.0
    assert task_ap((coco_results, []), "AP") == 0.5
    assert find_bbox_csvs(str(tmp_path)) == {"task_c": str(csv)}
