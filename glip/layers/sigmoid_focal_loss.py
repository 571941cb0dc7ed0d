"""Sigmoid focal losses (Lin et al. 2017) used by GLIP's ATSS head.

* `sigmoid_focal_loss`: the classic multi-class form on `(N, C)` logits with integer labels (0 = background),
  i.e. the maskrcnn_benchmark `SigmoidFocalLoss` op, written with `logsigmoid` (the numerically stable form of
  the CUDA kernel) so it runs on any device.
* `token_sigmoid_binary_focal_loss`: the binary form over (region, token) pairs with a text mask, used for the
  region-token alignment logits (`loss_dot_product_token`, `loss_token`).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                       alpha: float = 0.25) -> torch.Tensor:
    """Per-element focal loss `(N, C)`.

    Args:
        logits: `(N, C)` class logits; column j scores class j + 1.
        targets: `(N,)` integer labels in 0..C (0 = background); entries < 0 are ignored (zero loss).
    """
    num_classes = logits.shape[1]
    class_range = torch.arange(1, num_classes + 1, dtype=targets.dtype, device=targets.device).unsqueeze(0)
    t = targets.unsqueeze(1)
    p = torch.sigmoid(logits)
    term_pos = (1 - p) ** gamma * F.logsigmoid(logits)
    term_neg = p ** gamma * F.logsigmoid(-logits)
    is_pos = (t == class_range).to(logits.dtype)
    is_neg = ((t != class_range) & (t >= 0)).to(logits.dtype)
    return -is_pos * term_pos * alpha - is_neg * term_neg * (1 - alpha)


class SigmoidFocalLoss(nn.Module):
    """Summed `sigmoid_focal_loss(logits (N, C), targets (N,))`."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, self.gamma, self.alpha).sum()

    def extra_repr(self) -> str:
        return "gamma={}, alpha={}".format(self.gamma, self.alpha)


def token_sigmoid_binary_focal_loss(pred_logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                                    gamma: float = 2.0, text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Binary focal loss of every (region, token) pair.

    Args:
        pred_logits: `(B, N, T)` logits of N regions against T tokens.
        targets: `(B, N, T)` binary targets (1 where the region's object is described by the token).
        alpha: weight of the positive class (negatives get 1 - alpha); < 0 disables the weighting.
        gamma: focusing exponent on `(1 - p_t)`.
        text_mask: `(B, T)` attention mask; pairs with a masked token (<= 0) are dropped.

    Returns:
        the unreduced loss: `(B, N, T)` without a mask, else a flat vector over the kept pairs.
    """
    if pred_logits.dim() != 3 or targets.dim() != 3:
        raise ValueError("expected (batch, regions, tokens) logits and targets")
    if text_mask is not None:
        if text_mask.dim() != 2:
            raise ValueError("text_mask must be (batch, tokens)")
        keep = (text_mask > 0).unsqueeze(1).repeat(1, pred_logits.size(1), 1)
        pred_logits = torch.masked_select(pred_logits, keep)
        targets = torch.masked_select(targets, keep)

    p = torch.sigmoid(pred_logits)
    ce_loss = F.binary_cross_entropy_with_logits(pred_logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


class TokenSigmoidFocalLoss(nn.Module):
    """Summed `token_sigmoid_binary_focal_loss(logits (B, N, T), targets (B, N, T), text_masks (B, T))`."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                text_masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        return token_sigmoid_binary_focal_loss(logits, targets, self.alpha, self.gamma, text_masks).sum()

    def extra_repr(self) -> str:
        return "alpha={}, gamma={}".format(self.alpha, self.gamma)
