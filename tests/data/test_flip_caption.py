"""A forced horizontal flip keeps every box's token targets on its phrase, with and without the left/right swap.

Captions hold the words the reference's substring swap corrupted ("bright", "upright", "leftover", "left-hand",
EgoHands' "myleft"/"yourright"); after the flip, the tokens each box's positive-map row marks are decoded with the
tokenizer and compared with the box's phrase, written out by hand.
"""
import pytest
import torch
from tiny_datasets import write_coco

from glip.data.datasets.coco_grounding import CocoGrounding
from glip.data.datasets.modulated import FlickrDataset
from glip.data.positive_map import load_tokenizer
from glip.data.transforms import (Caption, Compose, RandomHorizontalFlip, ToTensor, build_transforms,
                                  move_position, swap_left_right_words)

CAPTION = ("a bright lamp on the left, an upright leftover left-hand glove, myleft and yourright hands. "
           "Right side: a cat")
PHRASES = ["bright lamp on the left", "upright leftover left-hand glove", "myleft", "yourright hands",
           "Right side", "a cat"]
SWAPPED = ("a bright lamp on the right, an upright leftover right-hand glove, myleft and yourright hands. "
           "Left side: a cat")
SWAPPED_PHRASES = ["bright lamp on the right", "upright leftover right-hand glove", "myleft", "yourright hands",
                   "Left side", "a cat"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _squash(text: str) -> str:
    return "".join(text.lower().split())


def _decoded_phrases(target, tokenizer):
    """Per box: the caption tokens its positive-map row marks, decoded."""
    ids = tokenizer(target.get_field("caption"))["input_ids"]
    rows = target.get_field("positive_map")
    return [tokenizer.decode([ids[t] for t in torch.nonzero(row).flatten().tolist()]) for row in rows]


def _flickr(tmp_path):
    spans = [[[CAPTION.index(p), CAPTION.index(p) + len(p)]] for p in PHRASES]
    images = [{"id": 1, "file_name": "1.jpg", "width": 60, "height": 40, "caption": CAPTION}]
    anns = [{"image_id": 1, "bbox": [2 + 5 * i, 3, 10, 10], "category_id": 1, "tokens_positive": s}
            for i, s in enumerate(spans)]
    return write_coco(tmp_path, images, anns, [{"id": 1, "name": "object"}])


def test_swap_whole_words_only():
    text, edits = swap_left_right_words(CAPTION)
    assert text == SWAPPED
    l1, l2, r = CAPTION.index("left,"), CAPTION.index("left-hand"), CAPTION.index("Right")
    # each "left" -> "right" moves the rest of the text one character on; "Right" -> "Left" one back
    assert edits == [(l1, l1 + 4, l1, l1 + 5), (l2, l2 + 4, l2 + 1, l2 + 6), (r, r + 5, r + 2, r + 6)]
    assert swap_left_right_words("LEFT or Left, right!")[0] == "RIGHT or Right, left!"
    assert swap_left_right_words("bright upright leftover myleft yourright my_left")[0] == \
        "bright upright leftover myleft yourright my_right"


def test_move_position_by_hand():
    edits = [(4, 8, 4, 9)]                     # "the left one" -> "the right one"
    assert [move_position(p, edits) for p in (0, 4, 6, 8, 9)] == [0, 4, 4, 9, 10]
    assert [move_position(p, edits, is_end=True) for p in (3, 4, 6, 8, 12)] == [3, 4, 9, 9, 13]
    caption = Caption("the left one").swap_left_right()
    assert caption.text == "the right one" and caption.move_span(4, 12) == (4, 13)
    back = caption.swap_left_right()             # a second swap composes
    assert back.text == "the left one" and back.move_span(4, 12) == (4, 12)


class _NoRightVocab:
    """A word-level tokenizer whose vocabulary lacks "right" (two pieces)."""

    def tokenize(self, text):
        return [piece for word in text.lower().split() for piece in (["r", "##ight"] if word == "right" else [word])]


def test_swap_skipped_when_it_would_change_the_tokens(tokenizer):
    caption = Caption("the left one")
    assert caption.swap_left_right(tokenizer).text == "the right one"
    assert caption.swap_left_right(_NoRightVocab()) is caption
    assert Caption("a \u20acleft sign").swap_left_right().text == "a \u20acleft sign"  # "\u20acleft": one BERT word


@pytest.mark.parametrize("swap", [False, True])
def test_forced_flip_keeps_token_targets_on_phrases(tmp_path, tokenizer, swap):
    img_dir, ann = _flickr(tmp_path)
    flip = RandomHorizontalFlip(1.0, swap_left_right=swap, tokenizer=tokenizer)
    ds = FlickrDataset(img_dir, ann, transforms=Compose([flip, ToTensor()]), tokenizer=tokenizer, is_train=True)
    _, target, _ = ds[0]
    caption = target.get_field("caption")
    expected = SWAPPED_PHRASES if swap else PHRASES
    assert caption == (SWAPPED if swap else CAPTION)
    assert [caption[s[0][0]:s[0][1]] for s in target.get_field("tokens_positive")] == expected
    assert [_squash(d) for d in _decoded_phrases(target, tokenizer)] == [_squash(p) for p in expected]
    # xywh (2, 3, 10, 10) -> xyxy (2, 3, 11, 12) (legacy +1), flipped x -> 60 - x - 1
    torch.testing.assert_close(target.bbox[0], torch.tensor([48.0, 3.0, 57.0, 12.0]))


def test_flip_from_config_swaps_only_with_the_project_key(tmp_path, tokenizer):
    from glip.config import cfg as default_cfg

    cfg = default_cfg.clone()
    cfg.merge_from_list(["AUGMENT.FLIP_PROB_TRAIN", 1.0, "INPUT.MIN_SIZE_TRAIN", 40, "INPUT.MAX_SIZE_TRAIN", 60])
    img_dir, ann = _flickr(tmp_path)
    plain = FlickrDataset(img_dir, ann, transforms=build_transforms(cfg, True), tokenizer=tokenizer, is_train=True)
    assert plain[0][1].get_field("caption") == CAPTION
    cfg.AUGMENT.FLIP_SWAP_LEFT_RIGHT = True
    swapping = FlickrDataset(img_dir, ann, transforms=build_transforms(cfg, True), tokenizer=tokenizer,
                             is_train=True)
    target = swapping[0][1]
    assert target.get_field("caption") == SWAPPED
    assert [_squash(d) for d in _decoded_phrases(target, tokenizer)] == [_squash(p) for p in SWAPPED_PHRASES]


@pytest.mark.parametrize("swap", [False, True])
def test_egohands_classes_keep_their_tokens(tmp_path, tokenizer, swap):
    names = ["myleft", "myright", "yourleft", "yourright"]
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}]
    anns = [{"image_id": 1, "bbox": [2 + 8 * i, 2, 6, 6], "category_id": i + 1} for i in range(4)]
    img_dir, ann = write_coco(tmp_path, images, anns, cats)
    flip = RandomHorizontalFlip(1.0, swap_left_right=swap, tokenizer=tokenizer)
    ds = CocoGrounding(img_dir, ann, transforms=Compose([flip, ToTensor()]), tokenizer=tokenizer,
                       disable_shuffle=True, separation_tokens=". ")
    _, target, _ = ds[0]
    assert target.get_field("caption") == "myleft. myright. yourleft. yourright"
    labels = target.get_field("labels").tolist()
    assert [_squash(d) for d in _decoded_phrases(target, tokenizer)] == [names[label - 1] for label in labels]
