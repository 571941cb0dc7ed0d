"""FrozenTextCache: each distinct caption row encoded once, outputs equal to the encoder's own, least recently
used rows dropped; MODEL.LANGUAGE_BACKBONE.CACHE_FROZEN builds it into the detector and is refused where it would
do nothing."""
import pytest
import torch
from helpers.tiny import tiny_glip_config

from glip.config.audit import RefusedOptionError, check_config
from glip.modeling.detector import build_detection_model
from glip.modeling.language.frozen_cache import FrozenTextCache


class CountingEncoder:
    """A fake encoder: features are functions of the ids alone; records the batch of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, input_ids, attention_mask):
        self.calls.append(input_ids.tolist())
        ids = input_ids.float()
        embedded = ids.unsqueeze(-1) * torch.tensor([1.0, -2.0, 0.5])
        return {"embedded": embedded, "hidden": embedded + 1, "aggregate": embedded.sum(1),
                "masks": attention_mask}


def _rows(*rows):
    ids = torch.tensor(rows)
    return ids, (ids != 0).long()


def test_rows_are_encoded_once_and_come_back_in_batch_order():
    encoder, cache = CountingEncoder(), FrozenTextCache(8)
    ids, mask = _rows([5, 6, 0], [7, 0, 0], [5, 6, 0])
    out = cache(encoder, ids, mask)
    assert encoder.calls == [[[5, 6, 0], [7, 0, 0]]]  # the repeated row is encoded once
    expected = CountingEncoder()(ids, mask)
    for name in expected:
        assert torch.equal(out[name], expected[name]), name
    ids2, mask2 = _rows([7, 0, 0], [8, 9, 0])
    out2 = cache(encoder, ids2, mask2)
    assert encoder.calls[1] == [[8, 9, 0]]  # only the new row
    assert torch.equal(out2["hidden"], CountingEncoder()(ids2, mask2)["hidden"])
    assert (cache.hits, cache.misses) == (1 + 1, 2 + 1)  # a repeat in the first batch, [7] in the second


def test_the_mask_is_part_of_the_key():
    encoder, cache = CountingEncoder(), FrozenTextCache(8)
    ids = torch.tensor([[5, 6, 7]])
    cache(encoder, ids, torch.tensor([[1, 1, 1]]))
    cache(encoder, ids, torch.tensor([[1, 1, 0]]))
    assert len(encoder.calls) == 2 and len(cache) == 2


def test_least_recently_used_rows_are_dropped():
    encoder, cache = CountingEncoder(), FrozenTextCache(2)
    for row in ([1], [2], [1], [3]):  # [1] used again before [3] comes, so [2] is the one dropped
        cache(encoder, *_rows(row))
    assert len(cache) == 2
    cache(encoder, *_rows([1]))
    cache(encoder, *_rows([2]))
    assert [c[0] for c in encoder.calls] == [[1], [2], [3], [2]]


def test_a_batch_larger_than_the_capacity_still_comes_back_whole():
    encoder, cache = CountingEncoder(), FrozenTextCache(1)
    ids, mask = _rows([1], [2], [3])
    assert torch.equal(cache(encoder, ids, mask)["embedded"], encoder(ids, mask)["embedded"])


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity must be positive, got 0"):
        FrozenTextCache(0)


def _frozen_config(cache_rows):
    return tiny_glip_config("MODEL.LANGUAGE_BACKBONE.FREEZE", True, "MODEL.LANGUAGE_BACKBONE.CACHE_FROZEN",
                            cache_rows)


def test_detector_with_the_cache_gives_the_frozen_encoders_features():
    torch.manual_seed(0)
    plain = build_detection_model(_frozen_config(0)).train()
    cached = build_detection_model(_frozen_config(16)).train()
    cached.load_state_dict(plain.state_dict())
    assert plain.text_cache is None and cached.text_cache.capacity == 16
    first = ["a red circle. a blue square", "person. car"]
    second = ["person. car", "a dog"]
    for captions in (first, second):
        want = plain.encode_text(captions, torch.device("cpu"))
        got = cached.encode_text(captions, torch.device("cpu"))
        for name in ("embedded", "hidden", "aggregate", "masks"):
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, msg=name)
    assert (cached.text_cache.hits, cached.text_cache.misses) == (1, 3)


def test_changed_encoder_weights_empty_the_cache():
    torch.manual_seed(0)
    plain = build_detection_model(_frozen_config(0)).eval()
    cached = build_detection_model(_frozen_config(16)).eval()
    cached.load_state_dict(plain.state_dict())
    captions = ["a red circle. a blue square"]
    cached.encode_text(captions, torch.device("cpu"))
    with torch.no_grad():  # an in-place update, as an optimizer step or a weight load makes
        for model in (plain, cached):
            next(model.language_backbone.parameters()).add_(0.5)
    got = cached.encode_text(captions, torch.device("cpu"))
    assert (cached.text_cache.hits, cached.text_cache.misses) == (0, 2)
    torch.testing.assert_close(got["hidden"], plain.encode_text(captions, torch.device("cpu"))["hidden"],
                               rtol=1e-5, atol=1e-5)
    cached.load_state_dict(cached.state_dict())  # loading weights (even the same) empties it too
    cached.encode_text(captions, torch.device("cpu"))
    assert (cached.text_cache.hits, cached.text_cache.misses) == (0, 3)


def test_cache_is_refused_where_it_would_do_nothing():
    check_config(_frozen_config(16))
    unfrozen = _frozen_config(16)
    unfrozen.MODEL.LANGUAGE_BACKBONE.FREEZE = False
    with pytest.raises(RefusedOptionError, match="MODEL.LANGUAGE_BACKBONE.CACHE_FROZEN = 16"):
        check_config(unfrozen)
    trimmed = _frozen_config(16)
    trimmed.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS = False
    with pytest.raises(RefusedOptionError, match="FREEZE True, USE_DOT_PRODUCT_TOKEN_LOSS True"):
        check_config(trimmed)
