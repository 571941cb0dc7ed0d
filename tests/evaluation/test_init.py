"""`evaluate` of saved predictions: the protocol the dataset declares (COCO through pycocotools, LVIS Fixed AP)."""
import json
from types import SimpleNamespace

import pytest
import torch
from pycocotools.coco import COCO

from glip.evaluation import EvalResult, evaluate
from glip.structures.bounding_box import BoxList


class LvisDetection:
    """Stand-in with the attributes `evaluate` documents for LVIS datasets."""

    evaluation_protocol = "lvis"

    def __init__(self, ann_file):
        self.ann_file = ann_file
        with open(ann_file) as f:
            self._images = {img["id"]: img for img in json.load(f)["images"]}
        self.id_to_img_map = {0: 1, 1: 2}

    def get_img_info(self, index):
        return self._images[self.id_to_img_map[index]]


def test_undeclared_dataset_is_refused_by_name():
    with pytest.raises(NotImplementedError, match="declares no evaluation_protocol"):
        evaluate(SimpleNamespace(coco=None), [], None)


def test_lvis_dispatch_resizes_and_scores(tmp_path, lvis_gt, lvis_detections):
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(lvis_gt))
    predictions = {}
    for index, image_id in ((0, 1), (1, 2)):
        mine = [d for d in lvis_detections if d[0] == image_id]
        # predicted at twice the original 100x100 size
        boxes = BoxList(torch.tensor([d[2] for d in mine], dtype=torch.float32) * 2, (200, 200))
        boxes.add_field("scores", torch.tensor([d[3] for d in mine]))
        boxes.add_field("labels", torch.tensor([d[1] for d in mine]))
        predictions[index] = boxes
    result = evaluate(LvisDetection(str(path)), predictions, str(tmp_path / "out"))
    assert isinstance(result, EvalResult) and result.protocol == "lvis"
    assert result.metrics["AP"] == pytest.approx(0.75)  # worked out in test_lvis.py
    assert result.score == result.metrics["AP"]
    assert (tmp_path / "out" / "bbox.csv").read_text().startswith("metric, avg \n")


def test_coco_dispatch(tmp_path):
    gt = {"info": {}, "images": [{"id": 5, "width": 50, "height": 40}], "categories": [{"id": 9, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 5, "category_id": 9, "bbox": [5, 5, 10, 10], "area": 100,
                           "iscrowd": 0}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    coco = COCO(str(path))
    dataset = SimpleNamespace(evaluation_protocol="coco", coco=coco, id_to_img_map={0: 5},
                              contiguous_category_id_to_json_id={1: 9}, get_img_info=lambda i: coco.imgs[5])
    boxes = BoxList(torch.tensor([[5.0, 5.0, 14.0, 14.0]]), (50, 40))
    boxes.add_field("scores", torch.tensor([0.5]))
    boxes.add_field("labels", torch.tensor([1]))
    result = evaluate(dataset, [boxes], str(tmp_path))
    results, coco_results = result.details
    assert coco_results["bbox"] == [{"image_id": 5, "category_id": 9, "bbox": [5.0, 5.0, 10.0, 10.0],
                                     "score": 0.5}]
    assert results.results["bbox"]["AP"] == pytest.approx(1.0)
    assert result.protocol == "coco" and result.metrics["bbox/AP"] == result.score == results.results["bbox"]["AP"]
