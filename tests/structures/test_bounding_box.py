"""BoxList: hand-computed cases of the legacy (+1 pixel) conventions."""
import pytest
import torch

from glip.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList


def _boxes():
    box = BoxList([[0, 0, 9, 9], [2, 4, 6, 10]], (20, 30))
    box.add_field("labels", torch.tensor([3, 7]))
    return box


def test_construction_validates_and_casts():
    box = BoxList([[1, 2, 3, 4]], (10, 10))
    assert box.bbox.dtype == torch.float32 and box.size == (10, 10) and box.mode == "xyxy"
    with pytest.raises(ValueError):
        BoxList(torch.zeros(4), (10, 10))
    with pytest.raises(ValueError):
        BoxList(torch.zeros(2, 5), (10, 10))
    with pytest.raises(ValueError):
        BoxList(torch.zeros(2, 4), (10, 10), mode="cxcywh")


def test_convert_roundtrip_uses_plus_one_widths():
    box = _boxes()
    xywh = box.convert("xywh")
    assert torch.equal(xywh.bbox, torch.tensor([[0.0, 0, 10, 10], [2, 4, 5, 7]]))
    assert torch.equal(xywh.get_field("labels"), torch.tensor([3, 7]))
    assert torch.equal(xywh.convert("xyxy").bbox, box.bbox)
    assert box.convert("xyxy") is box


def test_area_both_modes():
    box = _boxes()
    assert torch.equal(box.area(), torch.tensor([100.0, 35.0]))
    assert torch.equal(box.convert("xywh").area(), torch.tensor([100.0, 35.0]))


def test_resize_scales_without_plus_one():
    box = _boxes()
    same = box.resize((40, 60))
    assert same.size == (40, 60)
    assert torch.equal(same.bbox, box.bbox * 2)
    aniso = box.resize((10, 60))
    assert torch.equal(aniso.bbox, torch.tensor([[0.0, 0, 4.5, 18], [1, 8, 3, 20]]))
    assert torch.equal(aniso.get_field("labels"), torch.tensor([3, 7]))
    xywh = box.convert("xywh").resize((10, 60))
    assert xywh.mode == "xywh"
    assert torch.allclose(xywh.convert("xyxy").bbox, aniso.bbox)


def test_transpose_flips():
    box = _boxes()
    lr = box.transpose(FLIP_LEFT_RIGHT)
    # x -> W - x - 1 with W = 20
    assert torch.equal(lr.bbox, torch.tensor([[10.0, 0, 19, 9], [13, 4, 17, 10]]))
    tb = box.transpose(FLIP_TOP_BOTTOM)
    # y -> H - y with H = 30 (no -1, as the reference)
    assert torch.equal(tb.bbox, torch.tensor([[0.0, 21, 9, 30], [2, 20, 6, 26]]))
    assert torch.equal(lr.transpose(FLIP_LEFT_RIGHT).bbox, box.bbox)
    with pytest.raises(NotImplementedError):
        box.transpose(2)


def test_crop():
    box = _boxes()
    cropped = box.crop((3, 2, 8, 12))
    assert cropped.size == (5, 10)
    assert torch.equal(cropped.bbox, torch.tensor([[0.0, 0, 5, 7], [0, 2, 3, 8]]))


def test_clip_to_image():
    box = BoxList([[-5, -3, 25, 40], [18, 5, 30, 6], [21, 1, 25, 3]], (20, 30))
    clipped = box.clip_to_image(remove_empty=False)
    assert torch.equal(clipped.bbox, torch.tensor([[0.0, 0, 19, 29], [18, 5, 19, 6], [19, 1, 19, 3]]))
    box = BoxList([[-5, -3, 25, 40], [18, 5, 30, 6], [21, 1, 25, 3]], (20, 30))
    kept = box.clip_to_image(remove_empty=True)
    assert torch.equal(kept.bbox, torch.tensor([[0.0, 0, 19, 29], [18, 5, 19, 6]]))


def test_indexing_len_fields_and_copy():
    box = _boxes()
    assert len(box) == 2
    assert box.fields() == ["labels"] and box.has_field("labels") and not box.has_field("scores")
    sub = box[torch.tensor([1])]
    assert torch.equal(sub.bbox, torch.tensor([[2.0, 4, 6, 10]]))
    assert torch.equal(sub.get_field("labels"), torch.tensor([7]))
    mask = box[torch.tensor([True, False])]
    assert len(mask) == 1 and mask.get_field("labels").tolist() == [3]
    box.add_field("scores", torch.tensor([0.5, 0.25]))
    copy = box.copy_with_fields("scores")
    assert copy.fields() == ["scores"] and copy.bbox is box.bbox
    with pytest.raises(KeyError):
        box.copy_with_fields(["missing"])
    assert box.copy_with_fields(["missing", "labels"], skip_missing=True).fields() == ["labels"]
    moved = box.to("cpu")
    assert moved.fields() == ["labels", "scores"]


def test_concate_box_list():
    a, b = _boxes(), _boxes()[torch.tensor([0])]
    cat = BoxList.concate_box_list([a, b])
    assert len(cat) == 3 and cat.get_field("labels").tolist() == [3, 7, 3]
