"""box_iou_legacy / boxlist_iou / cat_boxlist / remove_small_boxes / boxlist_ml_nms."""
import pytest
import torch

from glip.structures.bounding_box import BoxList
from glip.structures.boxlist_ops import (box_iou_legacy, boxlist_iou, boxlist_ml_nms, boxlist_nms, cat_boxlist,
                                         remove_small_boxes)


def test_box_iou_legacy_plus_one_areas():
    a = torch.tensor([[0.0, 0, 9, 9], [0, 0, 4, 4]])
    b = torch.tensor([[5.0, 5, 14, 14], [20, 20, 30, 30]])
    iou = box_iou_legacy(a, b)
    # 10x10 boxes overlapping in a 5x5 block: 25 / (100 + 100 - 25)
    assert iou.shape == (2, 2)
    assert iou[0, 0].item() == pytest.approx(25 / 175)
    assert iou[1, 0].item() == 0.0 and iou[0, 1].item() == 0.0
    # touching boxes (x2 == x1) share one pixel column under the +1 rule
    touch = box_iou_legacy(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([[4.0, 0, 8, 4]]))
    assert touch.item() == pytest.approx(5 / 45)


def test_boxlist_iou_checks_size():
    a = BoxList([[0, 0, 9, 9]], (20, 20))
    assert boxlist_iou(a, a).item() == 1.0
    with pytest.raises(RuntimeError):
        boxlist_iou(a, BoxList([[0, 0, 9, 9]], (21, 20)))


def test_cat_boxlist():
    a = BoxList([[0, 0, 1, 1]], (5, 5))
    a.add_field("scores", torch.tensor([0.1]))
    b = BoxList([[1, 1, 2, 2], [0, 0, 3, 3]], (5, 5))
    b.add_field("scores", torch.tensor([0.2, 0.3]))
    cat = cat_boxlist([a, b])
    assert len(cat) == 3 and cat.get_field("scores").tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        cat_boxlist([a, BoxList([[0, 0, 1, 1]], (6, 5))])


def test_remove_small_boxes_uses_plus_one_sides():
    box = BoxList([[0, 0, 2, 9], [0, 0, 3, 3], [5, 5, 3, 9]], (20, 20))
    assert len(remove_small_boxes(box, 4)) == 1
    assert len(remove_small_boxes(box, 0)) == 2  # the inverted box has width -1
    assert len(remove_small_boxes(box, -1)) == 3
    assert len(remove_small_boxes(box, 1)) == 2


def test_boxlist_ml_nms_same_label_only_and_max_proposals():
    box = BoxList([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], (100, 100))
    box.add_field("scores", torch.tensor([0.9, 0.8, 0.7, 0.95]))
    box.add_field("labels", torch.tensor([1, 1, 2, 1]))
    out = boxlist_ml_nms(box, 0.6)
    assert out.get_field("scores").tolist() == pytest.approx([0.95, 0.9, 0.7])
    assert out.get_field("labels").tolist() == [1, 1, 2]
    assert len(boxlist_ml_nms(box, 0.6, max_proposals=2)) == 2
    assert boxlist_ml_nms(box, 0.0) is box
    xywh = boxlist_ml_nms(box.convert("xywh"), 0.6)
    assert xywh.mode == "xywh" and len(xywh) == 3


def test_boxlist_nms_is_class_agnostic():
    box = BoxList([[0, 0, 10, 10], [0, 0, 10, 10]], (100, 100))
    box.add_field("score", torch.tensor([0.2, 0.9]))
    out = boxlist_nms(box, 0.5)
    assert len(out) == 1 and out.get_field("score").item() == pytest.approx(0.9)
