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

from glip.evaluation.lvis import LvisEval, LvisFixedAPEvaluator, LvisGroundTruth, write_lvis_results, \
    xyxy_to_xywh


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


def test_build_lvis_evaluator_reads_the_normal_ap_switch(lvis_gt):
    from glip.config import cfg
    from glip.evaluation.lvis import build_lvis_evaluator

    config = cfg.clone()
    assert build_lvis_evaluator(config, lvis_gt).fixed_ap is True
    config.DATASETS.LVIS_USE_NORMAL_AP = True
    assert build_lvis_evaluator(config, lvis_gt).fixed_ap is False
