"""Detection-to-grounding conversion: captions, negatives sampling, control options, token budget."""
import random

import pytest

from glip.data import od_to_grounding as odg
from glip.data.positive_map import load_tokenizer

CLASSES = {0: "__background__", 1: "cat", 2: "dog", 3: "traffic_light", 4: "bird", 5: "fish", 6: "cow"}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _check_spans(caption, tokens_positive, labels):
    for spans, label in zip(tokens_positive, labels):
        beg, end = spans[0]
        assert caption[beg:end] == CLASSES[label].replace("_", " ")


def test_simple_sorted_with_detection_prompt():
    classes = {k: v for k, v in CLASSES.items() if k}
    tp, caption, green, l2p = odg.convert_od_to_grounding_simple([2, 3], classes, True, True, ". ")
    assert caption == "object detection : cat. dog. traffic light. bird. fish. cow"
    _check_spans(caption, tp, [2, 3])
    assert green == [l2p[2], l2p[3]]


def test_control_options():
    rng = random.Random(0)
    assert odg.generate_control_options((1.0, 0, 0, 0), 3, 7, rng) == (1, 0)
    assert odg.generate_control_options((0, 1.0, 0, 0), 3, 7, rng) == (0, 1)
    assert odg.generate_control_options((0, 0, 1.0, 0), 3, 7, rng) == (7, 3)
    draws = {odg.generate_control_options((0, 0, 0, 0), 3, 7, rng)[0] for _ in range(300)}
    assert draws == set(range(1, 8))
    with pytest.raises(ValueError):
        odg.generate_control_options((0, 0, 0, 0.5), 3, 7, rng)


def test_negatives_full(tokenizer):
    rng = random.Random(1)
    labels = [2, 2, 5]
    for _ in range(20):
        tp, caption, _, l2p = odg.convert_od_to_grounding_with_negatives(
            labels, CLASSES, tokenizer, random_sample_negative=3, control_probabilities=(0, 0, 1.0, 0),
            separation_tokens=". ", rng=rng)
        _check_spans(caption, tp, labels)
        assert "background" not in caption
        negatives = set(l2p) - {2, 5}
        assert {2, 5} <= set(l2p) and len(negatives) <= 3   # drawn positives are discarded
        assert len(l2p) >= 3 or negatives == set()


def test_negatives_disable_shuffle_lists_all(tokenizer):
    tp, caption, _, _ = odg.convert_od_to_grounding_with_negatives([4], CLASSES, tokenizer, disable_shuffle=True,
                                                                   separation_tokens=". ")
    assert caption == "cat. dog. traffic light. bird. fish. cow"
    _check_spans(caption, tp, [4])


def test_negative_budget_and_positive_overflow(tokenizer):
    rng = random.Random(0)
    # each "name. " is 2 tokens ("traffic light. " is 3); budget 5 after 2 positive tokens keeps one negative
    keep, length = odg.check_for_positive_overflow([1, 1], CLASSES, tokenizer, 10, rng=rng)
    assert keep == [0, 1] and length == 2
    _, caption, _, l2p = odg.convert_od_to_grounding_with_negatives(
        [1], CLASSES, tokenizer, random_sample_negative=5, control_probabilities=(0, 0, 1.0, 0),
        separation_tokens=". ", max_seq_length=5, positive_caption_length=2, rng=rng)
    assert len(l2p) == 2 and 1 in l2p
    keep, length = odg.check_for_positive_overflow([1, 2, 4, 2], CLASSES, tokenizer, 4, rng=random.Random(0))
    kept_labels = {[1, 2, 4, 2][i] for i in keep}
    assert len(kept_labels) == 2 and length == 6
