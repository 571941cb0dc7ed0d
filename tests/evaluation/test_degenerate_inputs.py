"""COCO and Flickr30k evaluation on degenerate inputs: zero-area and inverted boxes, images without annotations,
categories absent from an image or from the whole split, labels without a json id.

COCO: our evaluator's numbers are pycocotools' on the results the reference writes (boxes resized to the
original image, xyxy -> xywh with the +1 rule, unknown labels dropped), converted here by hand from the same
generated BoxLists. Flickr30k: recall worked out by hand (MDETR's IoU without +1, NaN IoU counting as a miss).
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from glip.evaluation.coco import CocoEvaluator
from glip.evaluation.flickr import FlickrRecallEvaluator, box_iou
from glip.structures.bounding_box import BoxList

LABEL_TO_JSON = {1: 3, 2: 7, 3: 9}  # json category 9 is never annotated; label 4 has no json id


def coco_split(seed):
    """(gt dict, predictions by dataset index at half the original size)."""
    rng = np.random.RandomState(seed)
    images, anns = [], []
    for i in range(5):
        w, h = int(rng.randint(80, 200)), int(rng.randint(60, 160))
        images.append({"id": 20 + i, "width": w, "height": h, "file_name": "{}.jpg".format(i)})
        if i == 1:
            continue  # an image without annotations
        for _ in range(rng.randint(1, 4)):
            bw, bh = rng.uniform(3, w / 2), rng.uniform(3, h / 2)
            box = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]
            anns.append({"id": len(anns) + 1, "image_id": 20 + i, "category_id": int(rng.choice([3, 7])),
                         "bbox": box, "area": bw * bh, "iscrowd": int(rng.rand() < 0.1)})
    gt = {"info": {}, "images": images, "annotations": anns,
          "categories": [{"id": c, "name": "c{}".format(c)} for c in (3, 7, 9)]}
    predictions = []
    for img in images:
        size = (img["width"] // 2, img["height"] // 2)
        boxes, labels = [], []
        for ann in anns:
            if ann["image_id"] == img["id"]:
                x, y, bw, bh = (v / 2 for v in ann["bbox"])
                boxes.append([x, y, x + bw - 1 + rng.normal(0, 1), y + bh - 1 + rng.normal(0, 1)])
                labels.append({3: 1, 7: 2}[ann["category_id"]])
        degenerate = [[10, 10, 10, 30], [10, 10, 30, 10], [20, 20, 12, 30], [20, 20, 12, 12], [5, 5, 4, 4]]
        boxes += degenerate + [list(rng.uniform(0, 40, size=2)) + list(rng.uniform(40, 60, size=2))]
        labels += [int(v) for v in rng.randint(1, 5, size=len(degenerate) + 1)]
        prediction = BoxList(torch.tensor(boxes, dtype=torch.float32), size)
        prediction.add_field("scores", torch.tensor(rng.uniform(0.05, 1, size=len(boxes)), dtype=torch.float32))
        prediction.add_field("labels", torch.tensor(labels))
        predictions.append(prediction)
    return gt, predictions


def reference_results(gt, predictions):
    """The reference's COCO results of the predictions, computed here without BoxList: scale to the original
    size, then x, y, x2 - x + 1, y2 - y + 1; labels without a json id dropped."""
    results = []
    for img, prediction in zip(gt["images"], predictions):
        sx, sy = img["width"] / prediction.size[0], img["height"] / prediction.size[1]
        for box, score, label in zip(prediction.bbox.tolist(), prediction.get_field("scores").tolist(),
                                     prediction.get_field("labels").tolist()):
            if label not in LABEL_TO_JSON:
                continue
            x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
            results.append({"image_id": img["id"], "category_id": LABEL_TO_JSON[label],
                            "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "score": score})
    return results


@pytest.mark.parametrize("seed", range(4))
def test_coco_metrics_equal_pycocotools_on_degenerate_inputs(seed, tmp_path):
    gt, predictions = coco_split(seed)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = COCO(str(tmp_path / "gt.json"))
    index_to_id = {k: img["id"] for k, img in enumerate(gt["images"])}
    dataset = SimpleNamespace(coco=coco, id_to_img_map=index_to_id, contiguous_category_id_to_json_id=LABEL_TO_JSON,
                              get_img_info=lambda k: coco.imgs[index_to_id[k]])
    evaluator = CocoEvaluator(dataset, str(tmp_path / "out"))
    evaluator.process(list(range(len(predictions))), [None] * len(predictions), predictions)
    result = evaluator.evaluate()

    expected = reference_results(gt, predictions)
    written = json.loads((tmp_path / "out" / "bbox.json").read_text())
    assert len(written) == len(expected)
    for ours, theirs in zip(written, expected):
        assert (ours["image_id"], ours["category_id"]) == (theirs["image_id"], theirs["category_id"])
        assert ours["bbox"] == pytest.approx(theirs["bbox"], abs=1e-3)
    (tmp_path / "dt.json").write_text(json.dumps(written))
    coco_eval = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    np.testing.assert_allclose(list(result.metrics.values()), coco_eval.stats[:6], rtol=0, atol=0)


# --- Flickr30k ----------------------------------------------------------------------------------------------------

SENTENCES = "[/EN#1/people A man] and [/EN#2/animals a dog] .\n"
XML = ("<annotation><size><width>100</width><height>100</height><depth>3</depth></size>"
       "<object><name>1</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>"
       "<object><name>2</name><bndbox><xmin>50</xmin><ymin>50</ymin><xmax>50</xmax><ymax>80</ymax></bndbox></object>"
       "</annotation>")


@pytest.fixture
def flickr_root(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "test.txt").write_text("7\n")
    (tmp_path / "Annotations" / "7.xml").write_text(XML)
    (tmp_path / "Sentences" / "7.txt").write_text(SENTENCES)
    return tmp_path


def test_flickr_iou_of_degenerate_boxes_by_hand():
    # zero-width prediction inside the gt: intersection 0 -> IoU 0
    assert box_iou([[15, 15, 15, 25]], [[10, 10, 30, 30]])[0, 0] == 0.0
    # inverted prediction (area -100): intersection 0 -> IoU 0 / (400 - 100) = 0
    assert box_iou([[20, 20, 10, 10]], [[10, 10, 30, 30]])[0, 0] == 0.0
    # two zero-area boxes: 0 / 0 is NaN (a miss at any threshold)
    with np.errstate(invalid="ignore"):
        assert np.isnan(box_iou([[50, 50, 50, 80]], [[50, 50, 50, 80]])[0, 0])


def test_flickr_recall_with_degenerate_boxes_by_hand(flickr_root):
    """Phrase 1 (people, gt [10,10,30,30]): a zero-width box, an inverted box, then the gt itself at rank 3.
    Phrase 2 (animals) has a zero-width gt: every IoU is 0 or NaN, never a hit. Recall@1 0, @5 1/2, @10 1/2."""
    predictions = [{"image_id": "7", "sentence_id": 0, "boxes": [
        [[15, 15, 15, 25], [30, 30, 10, 10], [10, 10, 30, 30], [0, 0, 0, 0]],
        [[50, 50, 50, 80], [45, 45, 55, 85], [0, 0, 0, 0]],
    ]}]
    with np.errstate(invalid="ignore"):
        report = FlickrRecallEvaluator(flickr_root, "test").evaluate(predictions)
    assert report[1] == {"all": 0.0, "people": 0.0, "animals": 0.0}
    assert report[5] == {"all": 0.5, "people": 1.0, "animals": 0.0}
    assert report[10] == report[-1] == report[5]
