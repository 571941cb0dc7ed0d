"""Prompt chunking of long category lists (glip/engine/chunking.py)."""
import itertools

import pytest
import torch

from glip.data.positive_map import load_tokenizer
from glip.engine.chunking import CATEGORY_SEPARATOR, chunk_categories, map_labels, merge_chunk_detections
from glip.structures.bounding_box import BoxList

ADJECTIVES = ["red", "wooden", "baseball", "electric", "paper", "toy", "glass", "leather", "plastic", "folding",
              "garden", "kitchen", "water", "ice", "cream", "steel", "tennis", "police", "fire", "beach",
              "coffee", "dining", "flower", "christmas", "hair", "tooth", "pencil", "shopping", "cowboy",
              "sunflower", "teddy", "traffic", "hockey", "ping-pong", "pocket", "rubber", "salad", "bulletproof"]
NOUNS = ["apple", "bat", "chair", "fan", "bag", "car", "bottle", "jacket", "cup", "table", "hose", "knife",
         "jug", "skate", "truck", "racket", "cap", "pot", "umbrella", "drier", "brush", "sharpener", "cart",
         "boot", "seed", "bear", "light", "stick", "paddle", "watch", "band", "bowl", "vest"]


def lvis_size_names(n=1203):
    """1203 distinct LVIS-like category names (one or two words, some split into several WordPieces)."""
    names = NOUNS + [f"{a} {b}" for a, b in itertools.product(ADJECTIVES, NOUNS)]
    return names[:n]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def category_prompt(names):
    return "".join(name + CATEGORY_SEPARATOR for name in names)


def test_lvis_size_list_chunks_fit_and_cover_in_order(tokenizer):
    names = lvis_size_names()
    assert len(set(names)) == 1203
    chunks = chunk_categories(names, tokenizer, max_len=256)
    assert [i for chunk in chunks for i in chunk] == list(range(len(names)))
    assert len(chunks) > 1
    for k, chunk in enumerate(chunks):
        prompt = category_prompt([names[i] for i in chunk])
        assert len(tokenizer(prompt)["input_ids"]) <= 256
        if k + 1 < len(chunks):  # greedy: the next name would not have fitted
            longer = category_prompt([names[i] for i in chunk] + [names[chunks[k + 1][0]]])
            assert len(tokenizer(longer)["input_ids"]) > 256


def test_list_that_fits_is_one_chunk(tokenizer):
    names = lvis_size_names(60)
    assert len(tokenizer(category_prompt(names))["input_ids"]) <= 256
    assert chunk_categories(names, tokenizer, max_len=256) == [list(range(60))]


def test_exact_budget(tokenizer):
    # "cat . " = 2 tokens each; [CLS] + [SEP] = 2: 10 names = 22 tokens
    names = ["cat"] * 10
    assert chunk_categories(names, tokenizer, max_len=22) == [list(range(10))]
    assert chunk_categories(names, tokenizer, max_len=21) == [list(range(9)), [9]]


def test_names_per_chunk_limit(tokenizer):
    # the post-processor scores at most NUM_CLASSES - 1 labels per prompt
    chunks = chunk_categories(["cat"] * 200, tokenizer, max_len=256, max_names=80)
    assert [len(c) for c in chunks] == [80, 80, 40]


def test_name_too_long_alone(tokenizer):
    with pytest.raises(ValueError, match="alone takes"):
        chunk_categories(["cat", "a very long name with many words"], tokenizer, max_len=8)


def make_boxlist(boxes, scores, labels):
    b = BoxList(torch.tensor(boxes, dtype=torch.float32), (100, 100))
    b.add_field("scores", torch.tensor(scores))
    b.add_field("labels", torch.tensor(labels))
    return b


def test_map_labels_to_global():
    b = map_labels(make_boxlist([[0, 0, 10, 10]] * 3, [0.9, 0.8, 0.7], [1, 2, 3]), [4, 7, 9])
    assert b.get_field("labels").tolist() == [5, 8, 10]


def test_merge_applies_per_class_nms_and_cap():
    first = make_boxlist([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.3], [1, 2])
    second = make_boxlist([[0, 0, 10, 11], [0, 0, 10, 10], [20, 20, 30, 30]], [0.8, 0.6, 0.5], [1, 3, 3])
    merged = merge_chunk_detections([first, second], nms_thresh=0.6)
    # label 1: (0,0,10,11) overlaps (0,0,10,10) with IoU 121/132 > 0.6 -> suppressed; other labels untouched
    assert merged.get_field("scores").tolist() == pytest.approx([0.9, 0.6, 0.5, 0.3])
    assert merged.get_field("labels").tolist() == [1, 3, 3, 2]
    capped = merge_chunk_detections([first, second], nms_thresh=0.6, max_detections=2)
    assert capped.get_field("scores").tolist() == pytest.approx([0.9, 0.6])
