"""Focal losses: the token binary focal loss against the reference golden and the focal-loss formula by hand."""
import math

import pytest
import torch
from helpers import load_golden

from glip.layers.sigmoid_focal_loss import (
    SigmoidFocalLoss,
    TokenSigmoidFocalLoss,
    sigmoid_focal_loss,
    token_sigmoid_binary_focal_loss,
)


def _focal(logit, target, alpha=0.25, gamma=2.0):
    """Binary focal loss of one scalar pair, from the definition (float64 maths)."""
    p = 1.0 / (1.0 + math.exp(-logit))
    if target == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p ** gamma * math.log(1 - p)


def test_token_focal_loss_matches_reference_golden():
    g = load_golden("modules/token_sigmoid_focal_loss.pt")
    loss = TokenSigmoidFocalLoss(g["alpha"], g["gamma"])(g["logits"], g["targets"], g["text_mask"])
    torch.testing.assert_close(loss, g["loss_sum"], rtol=1e-5, atol=1e-5)


def test_token_focal_loss_by_hand_with_mask():
    logits = torch.tensor([[[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]]])
    targets = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0]])
    loss = token_sigmoid_binary_focal_loss(logits, targets, 0.25, 2.0, mask)
    expected = [_focal(2.0, 1), _focal(-1.0, 0), _focal(-3.0, 0), _focal(0.0, 1)]
    torch.testing.assert_close(loss.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-7)

    unmasked = token_sigmoid_binary_focal_loss(logits, targets, 0.25, 2.0)
    assert unmasked.shape == (1, 2, 3)
    torch.testing.assert_close(unmasked[0, 1, 2].item(), _focal(4.0, 1), rtol=1e-6, atol=1e-7)


def test_token_focal_loss_without_alpha_weighting():
    logits = torch.tensor([[[1.5]]])
    loss = token_sigmoid_binary_focal_loss(logits, torch.ones(1, 1, 1), alpha=-1.0, gamma=2.0)
    torch.testing.assert_close(loss.item(), _focal(1.5, 1) / 0.25, rtol=1e-6, atol=1e-7)


def test_classic_focal_loss_by_hand():
    logits = torch.tensor([[0.0, 1.0, -2.0], [3.0, -1.0, 0.5], [0.3, 0.2, 0.1]])
    labels = torch.tensor([2, 0, -1])          # class 2 (column 1), background, ignored
    loss = sigmoid_focal_loss(logits, labels, gamma=2.0, alpha=0.25)
    expected = torch.tensor([
        [_focal(0.0, 0), _focal(1.0, 1), _focal(-2.0, 0)],
        [_focal(3.0, 0), _focal(-1.0, 0), _focal(0.5, 0)],
        [0.0, 0.0, 0.0],
    ], dtype=torch.float64)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-7)
    total = SigmoidFocalLoss(2.0, 0.25)(logits, labels)
    torch.testing.assert_close(total.double(), expected.sum(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [-200.0, 200.0])
def test_classic_focal_loss_is_finite_for_saturated_logits(value):
    logits = torch.full((2, 3), value, requires_grad=True)
    labels = torch.tensor([1, 0])
    loss = SigmoidFocalLoss(2.0, 0.25)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
