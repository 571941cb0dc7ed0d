"""LVIS federated evaluation and Fixed AP on the hand-built case of conftest.py.

Every detection box equals its gt box exactly (IoU 1) or misses everything, so each category's AP is the same
at all ten IoU thresholds and follows from the ranked TP/FP list alone (101-point interpolated precision):
- category 1 (rare): d5 FP (verified-negative on image 2, 0.95) then d1 TP (0.9), one gt -> precision 1/2 at
  recall 1 -> AP 0.5
- category 2 (common): d2 FP (verified-negative on image 1, 0.95) then d6 TP -> AP 0.5
- category 3 (frequent): d4 (0.7) is unmatched but category 3 is not exhaustively annotated on image 1 -> ignored;
  d3, d7 TP -> AP 1
- category 4 (rare): d8 (0.99) is on an image where category 4 is neither annotated nor negative -> dropped;
  d9 TP -> AP 1
AP = 0.75, APr = (0.5 + 1) / 2, APc = 0.5, APf = 1.
"""
import math

import pytest
import torch

from glip.evaluation.lvis import LvisEval, LvisEvaluator, LvisFixedAPEvaluator, LvisGroundTruth, lvis_inputs, \
    write_lvis_results, xyxy_to_xywh
from glip.structures.bounding_box import BoxList


def _results(dets):
    return [{"image_id": img, "category_id": cat, "bbox": xyxy_to_xywh([box])[0].tolist(), "score": score}
            for img, cat, box, score in dets]


def _predictions(dets):
    """Per image `(image_id, {"boxes" xyxy, "scores", "labels"})` as the inference loop passes them."""
    out = []
    for image_id in sorted({d[0] for d in dets}):
        mine = [d for d in dets if d[0] == image_id]
        out.append((image_id, {"boxes": torch.tensor([d[2] for d in mine], dtype=torch.float32),
                               "scores": torch.tensor([d[3] for d in mine]),
                               "labels": torch.tensor([d[1] for d in mine])}))
    return out


def test_xyxy_to_xywh_has_no_plus_one():
    assert xyxy_to_xywh([[10, 20, 30, 60]]).tolist() == [[10, 20, 20, 40]]


def test_fixed_ap_hand_computed(lvis_gt, lvis_detections):
    evaluator = LvisFixedAPEvaluator(LvisGroundTruth(lvis_gt))
    evaluator.update(_predictions(lvis_detections))
    lines = evaluator.summarize()
    res = evaluator.results
    assert res["AP"] == pytest.approx(0.75)
    assert res["AP50"] == pytest.approx(0.75)
    assert res["AP75"] == pytest.approx(0.75)
    assert res["APr"] == pytest.approx(0.75)
    assert res["APc"] == pytest.approx(0.5)
    assert res["APf"] == pytest.approx(1.0)
    # medium gts: C (category 2: FP then TP -> 0.5) and D (category 3: d3 hits the small, ignored gt B -> 1)
    assert res["APm"] == pytest.approx(0.75)
    # small gts: A (d5 is medium -> ignored, d1 TP), B (d4 ignored, d3 TP), E (d9 TP); no large gt at all
    assert res["APs"] == pytest.approx(1.0)
    assert res["APl"] == -1
    assert res["AR@-1"] == pytest.approx(1.0)
    assert len(lines) == 13
    assert lines[0] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= -1 catIds=all] = 0.750"


def test_not_exhaustive_and_negative_semantics(lvis_gt, lvis_detections):
    lvis_gt["images"][0]["not_exhaustive_category_ids"] = []
    lvis_gt["images"][0]["neg_category_ids"] = []
    ev = LvisEval(lvis_gt, _results(lvis_detections), max_dets=-1)
    ev.run()
    ap = ev.precision[:, :, :, 0].mean(axis=(0, 1))  # per category, area "all"
    # category 2: d2 now dropped (image 1 says nothing about category 2) -> AP 1
    assert ap[1] == pytest.approx(1.0)
    # category 3: d4 now a FP ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1 -> interpolated 2/3
    assert ap[2] == pytest.approx(2 / 3)
    assert ap[0] == pytest.approx(0.5) and ap[3] == pytest.approx(1.0)


def test_fixed_ap_keeps_topk_per_category_over_the_split(lvis_gt, lvis_detections):
    evaluator = LvisFixedAPEvaluator(lvis_gt, topk=2)
    preds = _predictions(lvis_detections)
    for one in preds:  # streamed image by image, merged per category
        evaluator.update([one])
    evaluator.summarize()
    # category 3 keeps d4 and d3 only: recall 1/2 at precision 1 -> 51 of the 101 recall points
    expected = (0.5 + 0.5 + 51 / 101 + 1.0) / 4
    assert evaluator.results["AP"] == pytest.approx(expected)


def test_standard_ap_limits_detections_per_image(lvis_gt, lvis_detections):
    evaluator = LvisFixedAPEvaluator(lvis_gt, fixed_ap=False, max_dets_per_image=2)
    evaluator.update(_predictions(lvis_detections))
    evaluator.summarize()
    # kept: image 1 d8, d2; image 2 d5, d6 -> only category 2 (FP, TP) scores: AP = 0.5 / 4
    assert evaluator.results["AP"] == pytest.approx(0.125)
    assert "AR@2" in evaluator.results


def test_write_lvis_results(tmp_path, lvis_gt, lvis_detections):
    evaluator = LvisFixedAPEvaluator(lvis_gt)
    evaluator.update(_predictions(lvis_detections))
    lines = evaluator.summarize()
    path = tmp_path / "bbox.csv"
    write_lvis_results(lines, str(path))
    rows = path.read_text().split("\n")
    assert rows[0] == "metric, avg "
    assert rows[1] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= -1 catIds=all], 0.750 "
    assert rows[7] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= -1 catIds=  r], 0.750 "
    assert len(rows) == 15 and rows[-1] == ""
    assert not math.isnan(float(rows[2].split(", ")[-1]))


def test_standard_ap_caps_an_image_over_all_its_prompt_chunks(lvis_gt, lvis_detections):
    """Chunked prompts give several entries per image in one `update`; the 300 (here 2) cap spans them all."""
    chunks = _predictions([d for d in lvis_detections if d[1] in (1, 2)]) + \
        _predictions([d for d in lvis_detections if d[1] in (3, 4)])
    evaluator = LvisFixedAPEvaluator(lvis_gt, fixed_ap=False, max_dets_per_image=2)
    evaluator.update(chunks)
    evaluator.summarize()
    assert evaluator.results["AP"] == pytest.approx(0.125)


class LvisData:
    """Stand-in for an LVIS dataset: the gt json `ann_file`, index -> image id, image info."""

    def __init__(self, ann_file, gt):
        self.ann_file = str(ann_file)
        self.id_to_img_map = {0: 1, 1: 2}
        self._images = {img["id"]: img for img in gt["images"]}

    def get_img_info(self, index):
        return self._images[self.id_to_img_map[index]]


def _lvis_data(tmp_path, lvis_gt):
    import json

    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(lvis_gt))
    return LvisData(path, lvis_gt)


def _boxlist(dets, scale):
    """The detections of one image as the model gives them: xyxy at `scale` x the original 100x100 size."""
    boxes = BoxList(torch.tensor([d[2] for d in dets], dtype=torch.float32) * scale, (100 * scale, 100 * scale))
    boxes.add_field("scores", torch.tensor([d[3] for d in dets]))
    boxes.add_field("labels", torch.tensor([d[1] for d in dets]))
    return boxes


def test_lvis_inputs_are_in_original_pixels():
    """Boxes scaled from the 64x32 network input to the 128x96 original (x2, x3); the image id is the target's,
    else the dataset's."""
    prediction = BoxList(torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 20.0, 30.0]]), (64, 32))
    prediction.add_field("labels", torch.tensor([2, 1]))
    prediction.add_field("scores", torch.tensor([0.3, 0.9]))

    class DS:
        id_to_img_map = {5: 1234}

    targets = [{"orig_size": torch.tensor([96, 128])}, {"orig_size": torch.tensor([96, 128]),
                                                         "image_id": torch.tensor(77)}]
    (first, lvis), (second, _) = lvis_inputs(DS(), [5, 6], targets, [prediction, prediction])
    assert (first, second) == (1234, 77)
    assert lvis["boxes"].tolist() == [[2.0, 6.0, 6.0, 12.0], [20.0, 30.0, 40.0, 90.0]]
    assert lvis["labels"].tolist() == [2, 1]


def test_lvis_evaluator_streams_batches_and_writes_bbox_csv(tmp_path, lvis_gt, lvis_detections):
    """The hand-worked case of the module docstring through the protocol interface: image 1 predicted at twice its
    size with a target giving `orig_size` / `image_id`, image 2 at its own size without a target."""
    dataset = _lvis_data(tmp_path, lvis_gt)
    evaluator = LvisEvaluator(dataset, str(tmp_path / "out"))
    evaluator.process([0], [{"orig_size": torch.tensor([100, 100]), "image_id": torch.tensor(1)}],
                      [_boxlist([d for d in lvis_detections if d[0] == 1], 2)])
    evaluator.process([1], [None], [_boxlist([d for d in lvis_detections if d[0] == 2], 1)])
    result = evaluator.evaluate()
    assert result.protocol == "lvis" and result.primary == "AP"
    assert result.score == result.metrics["AP"] == pytest.approx(0.75)
    assert (result.metrics["APr"], result.metrics["APc"], result.metrics["APf"]) == pytest.approx((0.75, 0.5, 1.0))
    rows = (tmp_path / "out" / "bbox.csv").read_text().split("\n")
    assert rows[1] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= -1 catIds=all], 0.750 "
    evaluator.reset()
    evaluator.process([1], [None], [_boxlist([d for d in lvis_detections if d[0] == 2], 1)])
    assert evaluator.evaluate().metrics["APr"] == pytest.approx(0.5)  # category 1 lost its TP d1


def test_lvis_evaluator_from_config_reads_the_normal_ap_switch(tmp_path, lvis_gt):
    from glip.config import cfg

    dataset = _lvis_data(tmp_path, lvis_gt)
    config = cfg.clone()
    assert LvisEvaluator.from_config(config, dataset).fixed_ap is True
    config.DATASETS.LVIS_USE_NORMAL_AP = True
    evaluator = LvisEvaluator.from_config(config, dataset, "out")
    assert evaluator.fixed_ap is False and evaluator.output_folder == "out"
