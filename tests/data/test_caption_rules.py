"""The reference's caption-data rules on hand-made rows: strict confidence, one NMS over all boxes of a row, v2
flattening, the number of packed negatives and the packed caption with its shifted spans."""
import pytest

from glip.data.caption_rules import (
    BadRowError,
    flatten_v2,
    inference_caption,
    negative_pack_number,
    pack_caption,
    read_boxes,
    screen_boxes,
)
from glip.data.positive_map import load_tokenizer


class Scripted:
    """An rng replaying given draws: ``random()`` / ``randrange()`` pop their queues, ``shuffle`` reverses when
    ``reverse`` else keeps the order."""

    def __init__(self, randoms=(), ranges=(), reverse=False):
        self.randoms, self.ranges, self.reverse = list(randoms), list(ranges), reverse
        self.range_calls = []

    def random(self):
        return self.randoms.pop(0)

    def randrange(self, n):
        self.range_calls.append(n)
        return self.ranges.pop(0)

    def shuffle(self, items):
        if self.reverse:
            items.reverse()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_confidence_is_strict_and_one_nms_runs_over_all_phrases():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 50, 50], [41, 40, 51, 50]]
    scores = [0.5, 0.6, 0.9, 0.7, 0.55]
    tokens = [[(0, 3)], [(0, 3)], [(4, 7)], [(0, 3)], [(4, 7)]]  # phrases "dog" (0-3) and "cat" (4-7)
    # conf 0.5: the 0.5 box goes (strict); without NMS the rest keep their order.
    kept = screen_boxes(boxes, scores, tokens, conf=0.5, nms=-1)
    assert kept[1] == pytest.approx([0.6, 0.9, 0.7, 0.55]) and kept[2] == tokens[1:]
    # NMS at 0.5 (torchvision IoU, no +1): box 2 (cat, 0.9) suppresses box 1 (dog; IoU 81/119 = 0.68) although
    # their phrases differ; box 3 (dog, 0.7) suppresses box 4 (cat; IoU 90/110 = 0.82). Output by score.
    out_boxes, out_scores, out_tokens = screen_boxes(boxes, scores, tokens, conf=0.5, nms=0.5)
    assert out_boxes == [[1, 1, 11, 11], [40, 40, 50, 50]]
    assert out_scores == pytest.approx([0.9, 0.7]) and out_tokens == [[(4, 7)], [(0, 3)]]
    # IoU 0.68 is not above an NMS threshold of 0.7: both stay.
    assert len(screen_boxes(boxes, scores, tokens, conf=0.5, nms=0.7)[0]) == 3
    # Too few boxes above the confidence: None (the dataset draws another row).
    assert screen_boxes(boxes, scores, tokens, conf=0.7, nms=-1, min_boxes=2) is None
    assert len(screen_boxes(boxes, scores, tokens, conf=0.7, nms=-1, min_boxes=1)[0]) == 1


def test_v2_gives_every_box_of_an_entity_all_its_spans():
    caption = "a dog and a dog toy"
    anno = {"caption": caption, "bboxes": [[[0, 0, 5, 5], [6, 6, 9, 9]], [[1, 1, 2, 2]]],
            "scores": [[0.9, 0.8], [0.7]], "tokens_positive": [[[2, 5], [12, 15]], [[12, 19]]]}
    boxes, scores, tokens = read_boxes(anno, "v2")
    assert boxes == [[0, 0, 5, 5], [6, 6, 9, 9], [1, 1, 2, 2]]
    assert scores == pytest.approx([0.9, 0.8, 0.7])
    assert tokens == [[(2, 5), (12, 15)], [(2, 5), (12, 15)], [(12, 19)]]
    assert flatten_v2([[[0, 0, 1, 1]]], [[0.5]], [[[0, 1]]]) == ([[0, 0, 1, 1]], [0.5], [[[0, 1]]])
    # The same row read as v1 is malformed (an entity's box list is not a box).
    with pytest.raises(BadRowError, match="box 0"):
        read_boxes(anno, "v1")


def test_malformed_rows_name_what_is_wrong():
    good = {"caption": "a dog", "bboxes": [[0, 0, 1, 1]], "scores": [0.9], "tokens_positive": [[[2, 5]]]}
    assert read_boxes(good, "v1")[0] == [[0, 0, 1, 1]]
    with pytest.raises(BadRowError, match="lacks \\['scores'\\]"):
        read_boxes({k: v for k, v in good.items() if k != "scores"}, "v1")
    with pytest.raises(BadRowError, match="one length"):
        read_boxes(dict(good, scores=[0.9, 0.8]), "v1")
    with pytest.raises(BadRowError, match="bad span"):
        read_boxes(dict(good, tokens_positive=[[2, 5]]), "v1")
    with pytest.raises(ValueError, match="v3"):
        read_boxes(good, "v3")


def test_number_of_packed_negatives():
    # RANDOM_PACK_PROB -1 (its default): always the full number, no draw.
    assert negative_pack_number(20, -1.0, 0.4, Scripted()) == 20
    # GLIP-L: NO_RANDOM_PACK_PROBABILITY 0.4, RANDOM_PACK_PROB 0.5, two separate draws.
    assert negative_pack_number(20, 0.5, 0.4, Scripted(randoms=[0.39])) == 0
    assert negative_pack_number(20, 0.5, 0.4, Scripted(randoms=[0.4, 0.49])) == 20
    rng = Scripted(randoms=[0.4, 0.5], ranges=[13])
    assert negative_pack_number(20, 0.5, 0.4, rng) == 13 and rng.range_calls == [20]  # uniform in 0..19


def test_pack_caption_keeps_within_the_token_budget_and_shifts_the_spans(tokenizer):
    positive = "a cat on a mat"                       # 5 words -> 7 tokens with [CLS]/[SEP]
    negatives = ["a dog.", "two birds flying over the sea"]  # 5 and 8 tokens
    spans = [[(2, 5)], [(9, 14)]]
    # Budget 20 - 7 = 13: "a dog." (5 < 13) is taken, leaving 8; the 8-token caption is not below 8.
    packed, shifted, green = pack_caption(positive, negatives, spans, tokenizer, 20, True, Scripted())
    assert packed == "a cat on a mat. a dog. " and shifted == spans and green == [(0, 14)]
    # Reversed orders: the negatives are visited 1 then 0 (8 < 13 taken, leaving 5; 5 < 5 fails), and the kept
    # list [positive, birds] is reversed.
    packed, shifted, green = pack_caption(positive, negatives, spans, tokenizer, 20, True, Scripted(reverse=True))
    start = len("two birds flying over the sea. ")
    assert packed == "two birds flying over the sea. a cat on a mat. "
    assert shifted == [[(2 + start, 5 + start)], [(9 + start, 14 + start)]] and green == [(start, start + 14)]
    assert packed[shifted[0][0][0]:shifted[0][0][1]] == "cat"
    # Without the safeguard every negative is packed; a caption ending with "." gets no second one.
    packed, _, _ = pack_caption(positive, negatives, spans, tokenizer, 20, False, Scripted())
    assert packed == "a cat on a mat. a dog. two birds flying over the sea. "
    # No negative: caption and spans unchanged, no "." added.
    assert pack_caption(positive, [], spans, tokenizer, 20) == (positive, spans, [(0, 14)])


def test_inference_caption_rows():
    assert inference_caption([{"caption": "bing style"}]) == "bing style"
    assert inference_caption({"caption": "googlecc style"}) == "googlecc style"
    assert inference_caption({"captions": ["one.", "two."]}) == "one. two."
    # A caption with the frame (the reference joined 'captions' here and failed); both: the list, as it did.
    assert inference_caption({"caption": "x", "img_w": 3, "img_h": 4}) == "x"
    assert inference_caption({"caption": "x", "captions": ["y", "z"]}) == "y z"
    with pytest.raises(BadRowError):
        inference_caption({"text": "no caption"})
