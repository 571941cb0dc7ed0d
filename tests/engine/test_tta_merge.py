"""Merging test-time-augmentation views: area ranges, NMS / voting / soft-voting / soft-NMS per class, the
detection limit; every expected value is worked out by hand in the test (IoU with +1 widths)."""
import math

import pytest
import torch

from glip.engine.tta_merge import box_vote, keep_by_area, limit_detections, merge_detections, soft_nms, \
    suppress_class
from glip.structures.bounding_box import BoxList

# A and B overlap: +1 areas 100 and 100, intersection 9 x 10 = 90 -> IoU 90 / 110; C is far away.
A, B, C = [0.0, 0.0, 9.0, 9.0], [1.0, 0.0, 10.0, 9.0], [50.0, 50.0, 59.0, 59.0]
IOU_AB = 90.0 / 110.0


def _boxlist(boxes, scores, labels=None, size=(100, 100)):
    out = BoxList(torch.tensor(boxes, dtype=torch.float32).view(-1, 4), size)
    out.add_field("scores", torch.tensor(scores, dtype=torch.float32))
    if labels is not None:
        out.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    return out


def test_keep_by_area_uses_plus_one_areas_and_strict_bounds():
    # +1 areas: 10x10=100, 11x11=121, 20x20=400
    boxes = _boxlist([[0, 0, 9, 9], [0, 0, 10, 10], [0, 0, 19, 19]], [0.5, 0.5, 0.5])
    assert keep_by_area(boxes, 10, 20).bbox.tolist() == [[0, 0, 10, 10]]  # 100 and 400 are not strictly inside
    assert len(keep_by_area(boxes, 0, 10000)) == 3


def test_nms_keeps_the_best_of_overlapping_boxes():
    out = suppress_class(_boxlist([B, A, C], [0.6, 0.9, 0.5]), 0.6, "none")
    assert out.bbox.tolist() == [A, C] and out.get_field("scores").tolist() == pytest.approx([0.9, 0.5])
    # IoU 0.818 is not above 0.9: nothing suppressed
    assert len(suppress_class(_boxlist([B, A, C], [0.6, 0.9, 0.5]), 0.9, "nms")) == 3
    # TH <= 0: left as is
    assert len(suppress_class(_boxlist([B, A, C], [0.6, 0.9, 0.5]), 0.0, "none")) == 3


def test_vote_merges_a_cluster_into_its_score_weighted_mean():
    boxes, scores = box_vote(torch.tensor([B, C, A]), torch.tensor([0.6, 0.5, 0.9]), 0.6)
    # cluster {A (0.9), B (0.6)}: (0.9 * A + 0.6 * B) / 1.5, best score 0.9; C alone is kept as is
    assert boxes.tolist() == [pytest.approx([0.4, 0.0, 9.4, 9.0], abs=1e-5), C]
    assert scores.tolist() == pytest.approx([0.9, 0.5])
    assert box_vote(torch.tensor([A]), torch.tensor([0.9]), 0.6) is None  # one box: unchanged by the caller
    single = suppress_class(_boxlist([A], [0.9]), 0.6, "vote")
    assert single.bbox.tolist() == [A] and single.get_field("scores").tolist() == pytest.approx([0.9])


def test_soft_vote_also_keeps_members_with_decayed_scores_sorted_by_score():
    out = suppress_class(_boxlist([B, C, A], [0.6, 0.5, 0.9]), 0.6, "soft-vote", soft_vote_min_score=0.05)
    # merged box (0.9), C (0.5), B with 0.6 * (1 - IoU) = 0.109; A's own decayed score is 0 < 0.05
    assert out.get_field("scores").tolist() == pytest.approx([0.9, 0.5, 0.6 * (1 - IOU_AB)], rel=1e-5)
    assert out.bbox.tolist() == [pytest.approx([0.4, 0.0, 9.4, 9.0], abs=1e-5), C, B]
    high = suppress_class(_boxlist([B, C, A], [0.6, 0.5, 0.9]), 0.6, "soft-vote", soft_vote_min_score=0.2)
    assert len(high) == 2


def test_soft_nms_decays_scores_and_drops_those_below_the_threshold():
    keep, scores = soft_nms(torch.tensor([A, B, C]), torch.tensor([0.9, 0.6, 0.5]), 0.2)
    decayed_b = 0.6 * math.exp(-IOU_AB ** 2 / 0.95)  # 0.297
    # step 0: A is best, B decays, C (IoU 0) keeps 0.5; step 1: C is best and is swapped before B
    assert keep.tolist() == [0, 2, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.5, decayed_b], rel=1e-5)
    keep, scores = soft_nms(torch.tensor([A, B, C]), torch.tensor([0.9, 0.6, 0.5]), 0.6)
    assert keep.tolist() == [0]  # B (0.297) and C (0.5) fall below 0.6 when compared with A
    out = suppress_class(_boxlist([A, B, C], [0.9, 0.6, 0.5]), 0.2, "soft-nms")
    assert out.bbox.tolist() == [A, C, B]


def test_unknown_nms_type_is_refused():
    with pytest.raises(ValueError, match="TEST.SPECIAL_NMS"):
        suppress_class(_boxlist([A], [0.9]), 0.6, "greedy")


def test_limit_detections_keeps_ties_at_the_kth_score():
    boxes = _boxlist([A] * 5, [0.1, 0.5, 0.3, 0.5, 0.2])
    assert sorted(limit_detections(boxes, 2).get_field("scores").tolist()) == pytest.approx([0.5, 0.5])
    assert sorted(limit_detections(boxes, 3).get_field("scores").tolist()) == pytest.approx([0.3, 0.5, 0.5])
    assert len(limit_detections(boxes, 0)) == 5 and len(limit_detections(boxes, 10)) == 5


def test_merge_detections_suppresses_per_class_and_drops_other_labels(caplog):
    boxes = _boxlist([A, B, A, C, A], [0.9, 0.6, 0.4, 0.5, 0.8], labels=[1, 1, 2, 2, 7])
    with caplog.at_level("WARNING"):
        out = merge_detections(boxes, classes=[2, 1], nms_thresh=0.6)
    # class 2 first (the order of `classes`): A (0.4), C (0.5) do not overlap; class 1: B suppressed by A
    assert out.get_field("labels").tolist() == [2, 2, 1]
    assert out.get_field("scores").tolist() == pytest.approx([0.5, 0.4, 0.9])
    assert "[7]" in caplog.text
    assert len(merge_detections(boxes, classes=[1, 2], nms_thresh=0.6, max_detections=1)) == 1
    empty = merge_detections(boxes, classes=[], nms_thresh=0.6)
    assert len(empty) == 0 and empty.has_field("labels")
