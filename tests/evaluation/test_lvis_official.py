"""Our LVIS evaluation against the official LVIS API (PyPI `lvis`) on generated data with degenerate inputs.

Each generated split has images without annotations, categories absent from images (verified negative or
unknown), not-exhaustively annotated categories, ignored gts, a zero-area gt, a gt with id 0 (the API records
the matched gt's id, so a match to it counts as unmatched), and detections that are exact or jittered copies of
gts, random boxes, zero-width / zero-height boxes, inverted boxes (negative width, and both sides negative:
positive area) and tied scores. Standard AP (per-image limit), a small per-image limit and Fixed AP (no limit)
must give the API's metrics and precision / recall arrays exactly.
"""
import copy
import json

import numpy as np
import pytest
import torch

from glip.evaluation.lvis import LvisEval, LvisFixedAPEvaluator, LvisGroundTruth

lvis_api = pytest.importorskip("lvis")
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")

FREQUENCIES = "rcfrcf"


@pytest.fixture(autouse=True)
def numpy_float_alias(monkeypatch):
    """lvis 0.5.3 still calls `np.float`, removed in numpy 1.24: give it the builtin it stood for."""
    monkeypatch.setattr(np, "float", float, raising=False)


def generate_split(seed):
    """(LVIS gt dict, results list of {"image_id", "category_id", "bbox": xywh, "score"})."""
    rng = np.random.RandomState(seed)
    num_images, num_cats = 7, len(FREQUENCIES)
    cats = [{"id": c + 1, "name": "c{}".format(c + 1), "frequency": FREQUENCIES[c]} for c in range(num_cats)]
    images, anns = [], []
    for i in range(num_images):
        img_id = 100 + i
        present = [] if i == 0 else sorted(rng.choice(num_cats, size=rng.randint(1, 4), replace=False) + 1)
        absent = [c for c in range(1, num_cats + 1) if c not in present]
        negative = [c for c in absent if rng.rand() < 0.5]
        not_exhaustive = [int(c) for c in present if rng.rand() < 0.3]
        images.append({"id": img_id, "width": 200, "height": 150, "neg_category_ids": [int(c) for c in negative],
                       "not_exhaustive_category_ids": not_exhaustive})
        for cat in present:
            for _ in range(rng.randint(1, 4)):
                w, h = rng.uniform(4, 120), rng.uniform(4, 100)
                box = [float(rng.uniform(0, 200 - w)), float(rng.uniform(0, 150 - h)), float(w), float(h)]
                ann = {"id": len(anns), "image_id": img_id, "category_id": int(cat), "bbox": box, "area": w * h}
                if rng.rand() < 0.1:
                    ann["ignore"] = 1
                anns.append(ann)
    anns[3]["area"] = 0.0  # zero-area gt: dropped by the API
    gt = {"images": images, "categories": cats, "annotations": anns}
    return gt, generate_detections(rng, gt)


def generate_detections(rng, gt):
    results = []
    scores = iter(np.round(rng.uniform(0.01, 1.0, size=1000), 2))  # rounded: ties happen
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(rng.randint(0, 3)):
            jitter = rng.normal(0, 0.15 * min(w, h), size=4) if rng.rand() < 0.7 else np.zeros(4)
            box = [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]]
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": box,
                            "score": float(next(scores))})
    degenerate = [[10, 10, 0, 20], [10, 10, 20, 0], [30, 30, -5, 10], [30, 30, -5, -10], [0, 0, 0, 0]]
    for img in gt["images"]:
        for _ in range(rng.randint(2, 8)):
            cat = int(rng.randint(1, len(gt["categories"]) + 1))
            box = [rng.uniform(0, 150), rng.uniform(0, 100), rng.uniform(1, 80), rng.uniform(1, 60)]
            results.append({"image_id": img["id"], "category_id": cat, "bbox": [float(v) for v in box],
                            "score": float(next(scores))})
        for box in degenerate:
            results.append({"image_id": img["id"], "category_id": int(rng.randint(1, len(gt["categories"]) + 1)),
                            "bbox": [float(v) for v in box], "score": float(next(scores))})
    for det in results:  # also copies of gts onto other categories of the same image
        if rng.rand() < 0.1:
            results.append(dict(det, category_id=int(rng.randint(1, len(gt["categories"]) + 1))))
    return results


def official(gt, results, tmp_path, max_dets):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    lvis_gt = lvis_api.LVIS(str(path))
    dt = lvis_api.LVISResults(lvis_gt, copy.deepcopy(results), max_dets=max_dets)
    evaluator = lvis_api.LVISEval(lvis_gt, dt, iou_type="bbox")
    evaluator.params.max_dets = max_dets
    evaluator.run()
    return evaluator


def assert_same(ours, theirs):
    assert list(ours.results) == list(theirs.results)
    for key, value in theirs.results.items():
        assert ours.results[key] == pytest.approx(float(value), abs=1e-12), key
    np.testing.assert_allclose(ours.precision, theirs.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.recall, theirs.eval["recall"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_dets", [300, 3, -1])
def test_lvis_eval_equals_the_official_api(seed, max_dets, tmp_path):
    gt, results = generate_split(seed)
    ours = LvisEval(gt, copy.deepcopy(results), max_dets=max_dets)
    ours.run()
    assert_same(ours, official(gt, results, tmp_path, max_dets))


def test_degenerate_detections_are_dropped_not_false_positives(tmp_path):
    """One gt, a matching detection (0.5) and zero-width / zero-height / inverted ones scoring higher: AP 1."""
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []}],
          "categories": [{"id": 1, "name": "a", "frequency": "f"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": box, "score": score} for box, score in
               [([10, 10, 20, 20], 0.5), ([10, 10, 0, 20], 0.9), ([10, 10, 20, 0], 0.8), ([10, 10, -3, 20], 0.7)]]
    ours = LvisEval(gt, copy.deepcopy(results), max_dets=300)
    assert ours.run()["AP"] == pytest.approx(1.0)
    assert_same(ours, official(gt, results, tmp_path, 300))


@pytest.mark.parametrize("seed", range(3))
def test_fixed_ap_pipeline_equals_the_official_api(seed, tmp_path):
    """Streaming xyxy predictions per image through LvisFixedAPEvaluator (Fixed AP, top-k per category over the
    split, no per-image limit) gives the API run on all detections with max_dets -1 (scores made unique so that
    the order of the streamed detections cannot matter)."""
    gt, results = generate_split(seed)
    for k, det in enumerate(results):
        det["score"] = round(det["score"], 2) + k * 1e-6
    evaluator = LvisFixedAPEvaluator(LvisGroundTruth(gt))
    for image in gt["images"]:
        mine = [d for d in results if d["image_id"] == image["id"]]
        boxes = torch.tensor([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]
                              for d in mine], dtype=torch.float64)
        evaluator.update([(image["id"], {"boxes": boxes, "scores": torch.tensor([d["score"] for d in mine],
                                                                                   dtype=torch.float64),
                                         "labels": torch.tensor([d["category_id"] for d in mine])})])
    evaluator.summarize()
    theirs = official(gt, results, tmp_path, -1)
    for key, value in theirs.results.items():
        assert evaluator.results[key] == pytest.approx(float(value), abs=1e-9), key
