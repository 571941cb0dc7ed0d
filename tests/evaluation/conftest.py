"""Shared hand-built LVIS case (see test_lvis.py for the worked-out APs)."""
import pytest

# LVIS boxes are xywh; predictions are xyxy with x2 = x + w (no +1 on the LVIS path).
BOX_A = [10, 10, 20, 20]  # image 1, category 1 (rare), small
BOX_B = [50, 50, 30, 30]  # image 1, category 3 (frequent), small
BOX_C = [0, 0, 40, 40]  # image 2, category 2 (common), medium
BOX_D = [60, 60, 40, 40]  # image 2, category 3, medium
BOX_E = [10, 60, 30, 30]  # image 2, category 4 (rare), small


def xyxy(box):
    x, y, w, h = box
    return [x, y, x + w, y + h]


@pytest.fixture
def lvis_gt():
    anns = [(1, 1, BOX_A), (1, 3, BOX_B), (2, 2, BOX_C), (2, 3, BOX_D), (2, 4, BOX_E)]
    return {
        "images": [
            {"id": 1, "width": 100, "height": 100, "neg_category_ids": [2], "not_exhaustive_category_ids": [3]},
            {"id": 2, "width": 100, "height": 100, "neg_category_ids": [1], "not_exhaustive_category_ids": []},
        ],
        "categories": [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "c"},
                       {"id": 3, "name": "c", "frequency": "f"}, {"id": 4, "name": "d", "frequency": "r"}],
        "annotations": [{"id": i + 1, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3]}
                        for i, (img, cat, box) in enumerate(anns)],
    }


@pytest.fixture
def lvis_detections():
    """(image_id, category_id, xyxy box, score): d1..d9 of test_lvis.py."""
    return [
        (1, 1, xyxy(BOX_A), 0.9),  # d1 TP
        (1, 2, xyxy([0, 0, 40, 40]), 0.95),  # d2 category 2 is verified absent on image 1 -> FP
        (1, 3, xyxy(BOX_B), 0.5),  # d3 TP
        (1, 3, xyxy([0, 60, 20, 20]), 0.7),  # d4 unmatched, category 3 not exhaustive on image 1 -> ignored
        (2, 1, xyxy([0, 0, 40, 40]), 0.95),  # d5 category 1 is verified absent on image 2 -> FP
        (2, 2, xyxy(BOX_C), 0.8),  # d6 TP
        (2, 3, xyxy(BOX_D), 0.4),  # d7 TP
        (1, 4, xyxy([70, 0, 20, 20]), 0.99),  # d8 category 4 neither present nor negative on image 1 -> dropped
        (2, 4, xyxy(BOX_E), 0.3),  # d9 TP
    ]
