"""The shallow contrastive loss against a loop-by-loop computation of its definition (single process)."""
import math

import pytest
import torch
from torch import nn

from glip.modeling.head.shallow_contrastive import (
    add_shallow_contrastive_parameters,
    sample_anchors,
    shallow_contrastive_loss,
)

T = 256


class ScriptedSampler:
    """`sample(population, k)` returns the next scripted pick (checked to be a k-subset of the population); k = 0
    draws nothing, as Python's `random.sample`."""

    def __init__(self, picks):
        self.picks = list(picks)

    def sample(self, population, k):
        if k == 0:
            return []
        pick = self.picks.pop(0)
        assert len(pick) == k and set(pick) <= set(population)
        return list(pick)


# image 0: anchors matched to boxes [-, 0, 1, 1, -, 2]; image 1: [1, -, -, 0, 1, -]
MATCHED = [torch.tensor([-1, 0, 1, 1, -1, 2]), torch.tensor([1, -1, -1, 0, 1, -1])]
BOX_LABELS = [torch.tensor([5, 7, 9]), torch.tensor([7, 4])]
TOKEN_LABELS = [torch.full((T,), -1.0), torch.full((T,), -1.0)]
TOKEN_LABELS[0][1:3], TOKEN_LABELS[0][3], TOKEN_LABELS[0][4] = 5, 7, 9     # "person. dog. cat" style
TOKEN_LABELS[1][1], TOKEN_LABELS[1][2] = 7, 4
OWN = [torch.zeros(3, T, dtype=torch.bool), torch.zeros(2, T, dtype=torch.bool)]
OWN[0][0, 1:3], OWN[0][1, 3], OWN[0][2, 4] = True, True, True
OWN[1][0, 1], OWN[1][1, 2] = True, True
TEXT_MASKS = torch.zeros(2, T, dtype=torch.long)
TEXT_MASKS[0, :6], TEXT_MASKS[1, :4] = 1, 1


def test_anchor_sampling_follows_the_reference():
    # candidates are anchors matched to a box other than the first: [2, 3, 5] and [0, 4]; at most 3 kept
    rng = ScriptedSampler([[5, 2, 3], [3]])
    positives, paddings, count = sample_anchors(MATCHED, 3, zero_pads=False, rng=rng)
    assert positives == [[2, 3, 5], [0, 4]] and count == 3
    # padding anchors: any anchor not a candidate (anchor 3 of image 1, matched to box 0, included)
    assert paddings == [[], [3]] and rng.picks == []
    positives, paddings, count = sample_anchors(MATCHED, 2, zero_pads=True, rng=ScriptedSampler([[3, 5], [4, 0]]))
    assert positives == [[3, 5], [0, 4]] and paddings == [[], []] and count == 2


def _expected(module, features, text, rows, num_pos_avg, zero_pads):
    """Loop-by-loop: rows = [(image, anchor or None, box or None)] of the batch's anchor list."""
    proj_i, proj_t = module.shallow_contrastive_projection_image, module.shallow_contrastive_projection_text
    scale = math.exp(module.shallow_log_scale.item())
    columns = [(j, t) for j in range(2) for t in range(T)]
    logits = torch.zeros(len(rows), len(columns), dtype=torch.float64)
    positive = torch.zeros(len(rows), len(columns), dtype=torch.float64)
    for r, (i, anchor, box) in enumerate(rows):
        q = proj_i(features[i, anchor]) if anchor is not None else None
        q = q / q.norm() if q is not None else torch.zeros(proj_i.out_features)
        for c, (j, t) in enumerate(columns):
            k = proj_t(text[j, t])
            logits[r, c] = float(q @ (k / k.norm())) / scale
            if not TEXT_MASKS[j, t] or (zero_pads and anchor is None):
                logits[r, c] = -1e6
            if box is not None:
                same = OWN[i][box, t] if i == j else BOX_LABELS[i][box] == TOKEN_LABELS[j][t]
                positive[r, c] = float(same)
    def direction(lg, pos):
        norm = pos / pos.sum(1, keepdim=True).clamp(min=1e-6)
        return -(norm * torch.log_softmax(lg, dim=1)).sum()
    return (direction(logits, positive) + direction(logits.t(), positive.t())) / 2 / num_pos_avg


@pytest.mark.parametrize("zero_pads", [False, True])
def test_loss_by_hand(zero_pads):
    torch.manual_seed(0)
    module = nn.Module()
    add_shallow_contrastive_parameters(module, image_dim=3, text_dim=4, hidden_dim=2, log_scale=0.5)
    assert module.shallow_contrastive_projection_image.bias.abs().sum() == 0
    features, text = torch.randn(2, 6, 3), torch.randn(2, T, 4)
    picks = [[5, 2, 3]] + ([] if zero_pads else [[1]])
    loss = shallow_contrastive_loss(features, text, TEXT_MASKS, MATCHED, BOX_LABELS, TOKEN_LABELS, OWN, module,
                                    num_pos_avg=4.0, max_positive=3, zero_pads=zero_pads,
                                    rng=ScriptedSampler(picks))
    pad_row = (1, None, None) if zero_pads else (1, 1, None)
    rows = [(0, 2, 1), (0, 3, 1), (0, 5, 2), (1, 0, 1), (1, 4, 1), pad_row]
    with torch.no_grad():
        expected = _expected(module, features, text, rows, 4.0, zero_pads)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    assert module.shallow_contrastive_projection_text.weight.grad.abs().sum() > 0
    assert module.shallow_log_scale.grad is not None


def test_text_must_be_256_tokens():
    module = nn.Module()
    add_shallow_contrastive_parameters(module, 3, 4, 2, 0.0)
    with pytest.raises(ValueError, match="256"):
        shallow_contrastive_loss(torch.randn(2, 6, 3), torch.randn(2, 10, 4), TEXT_MASKS[:, :10], MATCHED,
                                 BOX_LABELS, TOKEN_LABELS, OWN, module, 1.0)
