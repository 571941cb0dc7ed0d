"""Top-1 naming of ground-truth boxes, against hand-worked cases."""
from glip.evaluation.naming import boxes_without_object, summarize_naming, top1_names

GT = {
    "categories": [{"id": 1, "name": "red circle"}, {"id": 2, "name": "red square"},
                   {"id": 3, "name": "blue circle"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10]},
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [50, 50, 10, 10]},
    ],
}


DETECTIONS = [
        # image 1, box 1: the higher score wins although the lower one is right
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.4},
        {"image_id": 1, "category_id": 2, "bbox": [1, 0, 10, 10], "score": 0.6},
        # a high score that overlaps box 1 at IoU 25/175 < 0.5: ignored
        {"image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "score": 0.9},
        # image 1, box 2: right
        {"image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10], "score": 0.3},
        # image 2, box 3: named "red circle" (IoU 81/100 + ... >= 0.5)
        {"image_id": 2, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 0.5},
        # image 2, box 4: no detection there; a detection on another image's coordinates does not count
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "score": 0.9},
]


def test_best_overlapping_detection_names_each_box():
    names = top1_names(GT, DETECTIONS)
    assert names == [2, 3, 1, None]
    summary = summarize_naming(GT, names, {"circles": [1, 3], "squares": [2]})
    assert summary["circles"] == {"objects": 3, "right": 1, "wrong": 2, "missed": 0,
                                  "word_right": {0: 1, 1: 1}}
    assert summary["squares"] == {"objects": 1, "right": 0, "wrong": 0, "missed": 1, "word_right": {}}


def test_no_detections_all_missed():
    names = top1_names(GT, [])
    assert names == [None] * 4
    assert summarize_naming(GT, names, {"all": [1, 2, 3]})["all"]["missed"] == 4


def test_a_score_threshold_leaves_the_weaker_objects_undrawn():
    # >= 0.45: box 1 keeps "red square" (0.6), box 2's only detection (0.3) is not drawn, box 3 keeps 0.5
    names = top1_names(GT, DETECTIONS, min_score=0.45)
    assert names == [2, None, 1, None]
    assert summarize_naming(GT, names, {"all": [1, 2, 3]})["all"]["missed"] == 2
    assert top1_names(GT, DETECTIONS, min_score=0.5) == [2, None, 1, None]  # the threshold itself is drawn
    assert top1_names(GT, DETECTIONS, min_score=0.51) == [2, None, None, None]


def test_boxes_without_object_counts_drawn_boxes_that_cover_nothing():
    # the 0.9 box at IoU 25/175 with box 1 and the 0.9 box on image 1 where only image 2 has an object
    assert boxes_without_object(GT, DETECTIONS) == 2
    assert boxes_without_object(GT, DETECTIONS, min_score=0.95) == 0
    assert boxes_without_object(GT, DETECTIONS, iou=0.1) == 1  # IoU 0.14 with box 1 now counts as covering it
    on_empty_image = [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.2}]
    assert boxes_without_object(GT, on_empty_image) == 1
    assert boxes_without_object(GT, on_empty_image, min_score=0.3) == 0
