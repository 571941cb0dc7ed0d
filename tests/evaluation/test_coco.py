"""COCO-style evaluation: results conversion by hand, metrics against pycocotools run directly on the same files.

Ground truth: image 11 (100x80) holds a small box of json category 3; image 12 (300x200) holds a medium
(50x50) and a large (120x100) box of json category 7. Contiguous ids: 1 -> 3, 2 -> 7.
"""
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from glip.evaluation.coco import COCOResults, CocoEvaluator, accumulate_predictions, do_coco_evaluation, \
    prepare_for_coco_detection
from glip.structures.bounding_box import BoxList

GT = {
    "info": {},
    "images": [{"id": 11, "width": 100, "height": 80, "file_name": "a.jpg"},
               {"id": 12, "width": 300, "height": 200, "file_name": "b.jpg"}],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 11, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 12, "category_id": 7, "bbox": [50, 50, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 3, "image_id": 12, "category_id": 7, "bbox": [150, 60, 120, 100], "area": 12000, "iscrowd": 0},
    ],
}

# Expected results, worked out by hand: image 11 predicted at the network size 200x160 (x2), image 12 at its
# own size; xyxy -> xywh with w = x2 - x1 + 1; label 5 has no json id and is dropped.
EXPECTED = [
    {"image_id": 11, "category_id": 3, "bbox": [10.0, 10.0, 20.0, 20.0], "score": 0.875},
    {"image_id": 11, "category_id": 7, "bbox": [50.0, 50.0, 41.0, 26.0], "score": 0.875},
    {"image_id": 12, "category_id": 7, "bbox": [50.0, 50.0, 50.0, 50.0], "score": 0.75},
]


def _predictions():
    first = BoxList(torch.tensor([[20.0, 20.0, 58.0, 58.0], [0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 180.0, 150.0]]),
                    (200, 160))
    first.add_field("scores", torch.tensor([0.875, 0.96875, 0.875]))
    first.add_field("labels", torch.tensor([1, 5, 2]))
    second = BoxList(torch.tensor([[50.0, 50.0, 99.0, 99.0]]), (300, 200))
    second.add_field("scores", torch.tensor([0.75]))
    second.add_field("labels", torch.tensor([2]))
    return [first, second]


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(GT))
    coco = COCO(str(path))
    return SimpleNamespace(coco=coco, id_to_img_map={0: 11, 1: 12},
                           contiguous_category_id_to_json_id={1: 3, 2: 7},
                           get_img_info=lambda i: coco.imgs[{0: 11, 1: 12}[i]])


def test_prepare_for_coco_detection_by_hand(dataset):
    assert prepare_for_coco_detection(_predictions(), dataset) == EXPECTED
    as_dict = {1: _predictions()[1], 0: _predictions()[0]}
    assert prepare_for_coco_detection(as_dict, dataset) == EXPECTED


def test_metrics_equal_pycocotools(dataset, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        results, coco_results = do_coco_evaluation(dataset, _predictions(), str(out))
    assert isinstance(results, COCOResults)
    assert json.loads((out / "bbox.json").read_text()) == EXPECTED
    assert coco_results["bbox"] == EXPECTED
    assert (out / "coco_results.pth").exists()
    assert "Average Precision" in caplog.text

    reference_dt = tmp_path / "dt.json"
    reference_dt.write_text(json.dumps(EXPECTED))
    coco_eval = COCOeval(dataset.coco, dataset.coco.loadRes(str(reference_dt)), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    ours = results.results["bbox"]
    assert list(ours) == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    np.testing.assert_allclose(list(ours.values()), coco_eval.stats[:6], rtol=0, atol=0)
    # by hand: "cat" AP 1; "dog" FP (0.875) ranked before its TP (0.75), 2 gts: precision 1/2 up to recall
    # 1/2 -> 51 of 101 recall points -> 0.5 * 51 / 101
    assert ours["AP"] == pytest.approx((1 + 0.5 * 51 / 101) / 2)


def test_bbox_csv_layout(dataset, tmp_path):
    do_coco_evaluation(dataset, _predictions(), str(tmp_path))
    rows = (tmp_path / "bbox.csv").read_text().split("\n")
    assert rows[0] == "metric, cat, dog, avg "
    dog = 0.5 * 51 / 101

    def values(row):
        return [float(v) for v in row.split("], ")[1].split(",")]

    assert rows[1].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ], ")
    np.testing.assert_allclose(values(rows[1]), [1.0, dog, (1 + dog) / 2])
    assert rows[2].startswith(" Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ], ")
    np.testing.assert_allclose(values(rows[2]), [1.0, dog, (1 + dog) / 2])
    # per-category values average the raw slice, -1 (no gt in the range) included, as the reference does:
    # small: "dog" has no small gt; medium: "cat" has none, "dog" FP (medium) then TP -> 0.5;
    # large: "cat" none, "dog" large gt missed (its detections are outside the range, ignored) -> 0
    np.testing.assert_allclose(values(rows[3]), [1.0, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(values(rows[4]), [-1.0, 0.5, -0.25], atol=1e-12)
    np.testing.assert_allclose(values(rows[5]), [-1.0, 0.0, -0.5], atol=1e-12)


def test_no_detections_scores_zero(dataset, tmp_path):
    results, _ = do_coco_evaluation(dataset, [], str(tmp_path))
    assert results.results["bbox"]["AP"] == 0.0
    assert json.loads((tmp_path / "bbox.json").read_text()) == []


def test_gt_without_info_key(dataset, tmp_path):
    del dataset.coco.dataset["info"]
    results, _ = do_coco_evaluation(dataset, _predictions(), None)
    assert results.results["bbox"]["AP"] == pytest.approx((1 + 0.5 * 51 / 101) / 2)


def test_reference_bbox_csv_reproduced_from_its_bbox_json(tmp_path):
    """The reference's end-to-end `bbox.csv` is what our writer makes of the reference's own `bbox.json`."""
    from pathlib import Path

    from glip.evaluation.coco import evaluate_predictions_on_coco

    root = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "end_to_end"
    coco = COCO(str(root / "trees" / "annotations.json"))
    detections = json.loads((root / "golden" / "bbox.json").read_text())
    coco_eval = evaluate_predictions_on_coco(coco, detections, str(tmp_path / "bbox.json"))
    assert (tmp_path / "bbox.csv").read_text() == (root / "golden" / "bbox.csv").read_text()
    assert coco_eval.stats[0] == pytest.approx(2.6921611080026917e-05, rel=1e-12)


def test_accumulate_predictions_orders_by_index():
    assert accumulate_predictions({2: "c", 0: "a", 1: "b"}) == ["a", "b", "c"]


def test_coco_evaluator_collects_batches_and_writes_the_reference_files(dataset, tmp_path):
    """Batches in any order (targets unused): predictions.pth is the list by dataset index, bbox.json the hand-worked
    results, the metrics pycocotools' on them; the primary metric is bbox AP."""
    first, second = _predictions()
    evaluator = CocoEvaluator(dataset, str(tmp_path / "out"))
    evaluator.process([torch.tensor(1)], [None], [second])
    evaluator.process([0], [None], [first])
    result = evaluator.evaluate()

    saved = torch.load(tmp_path / "out" / "predictions.pth", weights_only=False)
    assert [p.bbox.tolist() for p in saved] == [first.bbox.tolist(), second.bbox.tolist()]
    assert json.loads((tmp_path / "out" / "bbox.json").read_text()) == EXPECTED
    assert {"bbox.csv", "coco_results.pth"} <= {p.name for p in (tmp_path / "out").iterdir()}
    reference_dt = tmp_path / "dt.json"
    reference_dt.write_text(json.dumps(EXPECTED))
    coco_eval = COCOeval(dataset.coco, dataset.coco.loadRes(str(reference_dt)), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert list(result.metrics) == ["bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl"]
    np.testing.assert_allclose(list(result.metrics.values()), coco_eval.stats[:6], rtol=0, atol=0)
    assert result.protocol == "coco" and result.primary == "bbox/AP" and result.score == coco_eval.stats[0]
    results, coco_results = result.details
    assert results.results["bbox"]["AP"] == result.score and coco_results["bbox"] == EXPECTED

    evaluator.reset()
    assert evaluator.evaluate().score == 0.0  # nothing processed since the reset: no detections


def test_coco_evaluator_refuses_what_is_not_implemented_before_any_work(dataset):
    with pytest.raises(NotImplementedError, match="only bbox"):
        CocoEvaluator(dataset, iou_types=("bbox", "segm"))
    with pytest.raises(NotImplementedError, match="box_only"):
        CocoEvaluator(dataset, box_only=True)
