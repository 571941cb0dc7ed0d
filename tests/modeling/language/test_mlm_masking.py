"""MLM masking of caption tokens against hand-worked draws (the reference's `random_word` rules)."""
import random

import pytest
import torch

from glip.modeling.language import build_tokenizer
from glip.modeling.language.mlm_masking import TokenMasker, mask_tokens

MASK, PAD = 103, 0


class Scripted:
    """A random source replaying given `random()` values and `choice()` picks, in order."""

    def __init__(self, draws, picks=()):
        self.draws, self.picks = list(draws), list(picks)
        self.choice_calls = 0

    def random(self):
        return self.draws.pop(0)

    def choice(self, seq):
        self.choice_calls += 1
        pick = self.picks.pop(0)
        assert pick in seq
        return pick


IDS = torch.tensor([[101, 7, 8, 9, 102, 0]])
# draws: [CLS] 0.5 not selected; 0.03 -> 0.2 of the selected range: [MASK]; 0.13 -> 0.867: a random token;
# 0.14 -> 0.933: kept; [SEP] 0.01 -> 0.067: [MASK] (special tokens are not protected); padding never selected
DRAWS = [0.5, 0.03, 0.13, 0.14, 0.01, 0.0]


def test_draws_decide_mask_random_or_keep():
    rng = Scripted(DRAWS, picks=[555])
    ids, labels = mask_tokens(IDS, MASK, list(range(1000)), PAD, rng=rng)
    assert ids.tolist() == [[101, MASK, 555, 9, MASK, 0]]
    assert labels.tolist() == [[-100, 7, 8, 9, 102, -100]]
    assert rng.draws == [] and rng.choice_calls == 1
    assert IDS.tolist() == [[101, 7, 8, 9, 102, 0]]  # the input is not changed


def test_greenlight_map_protects_and_excludes_positions():
    # -1: never masked (its draw is still made, no random token drawn); 0: may be masked, not in the loss
    green = torch.tensor([[0.0, 1.0, -1.0, 1.0, 0.0, 0.0]])
    rng = Scripted(DRAWS, picks=[])
    ids, labels = mask_tokens(IDS, MASK, list(range(1000)), PAD, greenlight_map=green, rng=rng)
    assert ids.tolist() == [[101, MASK, 8, 9, MASK, 0]]
    assert labels.tolist() == [[-100, 7, -100, 9, -100, -100]]
    assert rng.draws == [] and rng.choice_calls == 0


def test_rows_are_visited_in_order_and_shorter_greenlight_maps_exclude_the_rest():
    ids = torch.tensor([[101, 7, 102], [101, 8, 102]])
    green = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # narrower than the text: the last position is not in the loss
    out, labels = mask_tokens(ids, MASK, [1], PAD, green, Scripted([0.9, 0.01, 0.01, 0.9, 0.9, 0.01]))
    assert out.tolist() == [[101, MASK, MASK], [101, 8, MASK]]
    assert labels.tolist() == [[-100, 7, -100], [-100, -100, -100]]


def test_token_masker_uses_the_tokenizer_and_the_only_positives_switch():
    tokenizer = build_tokenizer()
    ids = tokenizer(["a cat"], return_tensors="pt")["input_ids"]                # [CLS] a cat [SEP]
    green = torch.tensor([[0.0, 1.0, -1.0, 0.0]])
    masker = TokenMasker(tokenizer, only_positives=True, rng=Scripted([0.01] * 4))
    assert masker.mask_token_id == tokenizer.mask_token_id == MASK and masker.pad_token_id == PAD
    assert len(masker.vocab_ids) == tokenizer.vocab_size
    out, labels = masker(ids, green)
    assert out.tolist() == [[MASK, MASK, ids[0, 2].item(), MASK]]
    assert labels.tolist() == [[-100, ids[0, 1].item(), -100, -100]]
    everything = TokenMasker(tokenizer, only_positives=False, rng=Scripted([0.01] * 4))
    out, labels = everything(ids, green)   # the greenlight map is ignored
    assert out.tolist() == [[MASK] * 4] and labels.tolist() == ids.tolist()


def test_frequencies_follow_the_reference_probabilities():
    ids = torch.full((40, 500), 5)
    out, labels = mask_tokens(ids, MASK, list(range(1000, 2000)), PAD, rng=random.Random(0))
    selected = labels != -100
    n = selected.sum().item()
    assert n / ids.numel() == pytest.approx(0.15, abs=0.01)
    assert (out[selected] == MASK).sum().item() / n == pytest.approx(0.8, abs=0.02)
    assert ((out[selected] >= 1000) & (out[selected] < 2000)).sum().item() / n == pytest.approx(0.1, abs=0.015)
    assert (out[selected] == 5).sum().item() / n == pytest.approx(0.1, abs=0.015)
    assert torch.equal(out[~selected], ids[~selected])
