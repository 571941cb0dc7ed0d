"""The shallow contrastive loss (MODEL.DYHEAD.FUSE_CONFIG.USE_SHALLOW_CONTRASTIVE_LOSS), as the reference computes it.

Anchor features *before* the fusion tower (the FPN levels) are contrasted with the text features the dot-product
head reads, over the whole batch (all processes gathered):

1. Per image, the anchors ATSS matched to a box other than the image's first one (the reference takes the anchors
   whose matched index is non-zero, so the first box's anchors are left out) are sampled down to
   SHALLOW_MAX_POSITIVE_ANCHORS (`rng.sample`, when there are at least that many) and padded to the batch's
   largest count `A`: with random unmatched anchors (`rng.sample`), or with zero rows (USE_SHALLOW_ZERO_PADS,
   masked out).
2. An (anchor, token) pair of the batch is positive when the anchor's box and the token carry the same detection
   label (`original_od_label` / `positive_map_for_od_labels`); inside the image's own caption the positives are
   the tokens of the anchor's box instead.
3. Logits: `normalize(proj_image(feature)) . normalize(proj_text(text)) / exp(shallow_log_scale)`, (B*A, B*256);
   padded tokens (and zero-padded anchors) are set to -1e6.
4. Loss: half the sum of the anchor->token and token->anchor cross-entropies against the row-normalised positive
   maps, divided by the number of positives per process.

The text must be 256 tokens wide (MAX_QUERY_LEN 256, PAD_MAX), as the reference's code assumes.
"""
import random
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from glip.utils.comm import all_gather, get_rank, get_world_size

TEXT_WIDTH = 256
PAD_LABEL = -100
MASKED_LOGIT = -1000000.0


@dataclass(frozen=True)
class ShallowContrastiveOptions:
    """The loss's settings: projection widths (image: CHANNELS x anchors, text: LANG_DIM, hidden:
    SHALLOW_CONTRASTIVE_HIDDEN_DIM), initial SHALLOW_LOG_SCALE, SHALLOW_MAX_POSITIVE_ANCHORS and
    USE_SHALLOW_ZERO_PADS."""

    image_dim: int = 256
    text_dim: int = 768
    hidden_dim: int = 64
    log_scale: float = 0.0
    max_positive_anchors: int = 100
    zero_pads: bool = False


def add_shallow_contrastive_parameters(module: nn.Module, image_dim: int, text_dim: int, hidden_dim: int,
                                       log_scale: float) -> None:
    """Register the reference's `shallow_contrastive_projection_image` (image_dim -> hidden_dim),
    `shallow_contrastive_projection_text` (text_dim -> hidden_dim) (Xavier-uniform weights, zero biases) and
    `shallow_log_scale` on `module` (the ATSS loss, so the keys read `rpn.loss_evaluator.shallow_*`)."""
    module.shallow_contrastive_projection_image = nn.Linear(image_dim, hidden_dim, bias=True)
    module.shallow_contrastive_projection_text = nn.Linear(text_dim, hidden_dim, bias=True)
    for linear in (module.shallow_contrastive_projection_image, module.shallow_contrastive_projection_text):
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
    module.shallow_log_scale = nn.Parameter(torch.tensor([float(log_scale)]))


def gather_tensors(tensor: torch.Tensor) -> torch.Tensor:
    """`(world, *tensor.shape)`: every process's tensor; only this process's keeps its gradient."""
    world = get_world_size()
    if world == 1:
        return tensor.unsqueeze(0)
    gathered = [torch.zeros_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(gathered, tensor.contiguous())
    gathered[get_rank()] = tensor
    return torch.stack(gathered, dim=0)


def row_normalized(positive_map: torch.Tensor) -> torch.Tensor:
    """Float map divided by its row sums (empty rows stay 0)."""
    positive_map = positive_map.float()
    counts = positive_map.sum(-1)
    counts[counts == 0] = 1e-6
    return positive_map / counts.unsqueeze(-1)


def _pad_rows(tensor: torch.Tensor, length: int, value) -> torch.Tensor:
    """`tensor` (n, ...) padded with `value` to (length, ...)."""
    out = tensor.new_full((length,) + tuple(tensor.shape[1:]), value)
    out[: tensor.shape[0]] = tensor
    return out


def sample_anchors(matched: Sequence[torch.Tensor], max_positive: int, zero_pads: bool,
                   rng=random) -> Tuple[List[List[int]], List[List[int]], int]:
    """`(positives, paddings, A)`: per image the sampled positive anchor indices and the random unmatched ones that
    pad them to `A` (empty with `zero_pads`); `matched` per image `(N,)` (-1 unmatched). Draws in the reference's
    order: the positives of every image, then the paddings."""
    candidates = [torch.nonzero(m >= 1).flatten().tolist() for m in matched]
    positives = [sorted(rng.sample(c, max_positive)) if len(c) >= max_positive else c for c in candidates]
    count = max(len(p) for p in positives)
    if get_world_size() > 1:
        count = max(all_gather(count))
    paddings = [[] for _ in positives]
    if not zero_pads:
        num_anchors = matched[0].shape[0]
        for i, (kept, every) in enumerate(zip(positives, candidates)):
            taken = set(every)
            paddings[i] = sorted(rng.sample([a for a in range(num_anchors) if a not in taken], count - len(kept)))
    return positives, paddings, count


def positive_map(matched, positives, box_od_labels, token_od_labels, own_maps, count) -> torch.Tensor:
    """`(world*B*A, world*B*256)` bool: which (anchor, token) pairs of the gathered batch are positive.

    Args: per image `matched` `(N,)`, `positives` (indices), `box_od_labels` `(boxes,)`, `token_od_labels`
    `(256,)`, `own_maps` `(boxes, 256)` bool (tokens of each box in its caption); `count` = A.
    """
    rank, batch = get_rank(), len(matched)
    labels, own = [], []
    for m, pos, box_labels, box_tokens in zip(matched, positives, box_od_labels, own_maps):
        index = torch.as_tensor(pos, dtype=torch.long, device=m.device)
        boxes = m[index]
        labels.append(_pad_rows(box_labels.to(m.device).long()[boxes], count, PAD_LABEL))
        own.append(_pad_rows(box_tokens.to(m.device)[boxes], count, False))
    tokens = gather_tensors(torch.stack([t.to(matched[0].device).long() for t in token_od_labels], dim=0))
    mapping = torch.stack(labels).view(-1, 1) == tokens.view(1, -1)
    for i in range(batch):
        column = (rank * batch + i) * TEXT_WIDTH
        mapping[i * count:(i + 1) * count, column:column + TEXT_WIDTH] = own[i]
    return gather_tensors(mapping).view(-1, mapping.shape[-1])


def anchor_embeddings(features: torch.Tensor, positives, paddings, count: int, projection: nn.Linear,
                      zero_pads: bool) -> torch.Tensor:
    """`(B, A, h)` normalised projections of each image's sampled anchors' features `(B, N, C)`, padded."""
    rows = []
    for i, (pos, pad) in enumerate(zip(positives, paddings)):
        emb = F.normalize(projection(features[i, pos, :]), p=2, dim=-1)
        if zero_pads:
            rows.append(_pad_rows(emb, count, 0.0))
        else:
            rows.append(torch.cat([emb, F.normalize(projection(features[i, pad, :]), p=2, dim=-1)], dim=0))
    return torch.stack(rows, dim=0)


def shallow_contrastive_loss(features: torch.Tensor, text: torch.Tensor, text_masks: torch.Tensor,
                             matched: Sequence[torch.Tensor], box_od_labels, token_od_labels, own_maps,
                             module: nn.Module, num_pos_avg: float, max_positive: int = 100,
                             zero_pads: bool = False, rng=random) -> torch.Tensor:
    """The loss (scalar).

    Args:
        features: `(B, N, C)` FPN features of every anchor (levels concatenated); text: `(B, 256, D)`;
        text_masks: `(B, 256)`; matched, box_od_labels, token_od_labels, own_maps: see `positive_map`;
        module: holds the parameters of `add_shallow_contrastive_parameters`.
    """
    if text.shape[1] != TEXT_WIDTH:
        raise ValueError("the shallow contrastive loss needs text {} tokens wide (got {})".format(
            TEXT_WIDTH, text.shape[1]))
    rank, batch = get_rank(), features.shape[0]
    positives, paddings, count = sample_anchors(matched, max_positive, zero_pads, rng)
    with torch.no_grad():
        positives_map = positive_map(matched, positives, box_od_labels, token_od_labels, own_maps, count)
        token_mask = gather_tensors(text_masks.bool()).view(-1)
        anchor_mask = None
        if zero_pads:
            lengths = torch.tensor([len(p) for p in positives], device=features.device)
            own_mask = torch.arange(count, device=features.device)[None, :] < lengths[:, None]
            anchor_mask = gather_tensors(own_mask).view(-1)
    text_emb = F.normalize(module.shallow_contrastive_projection_text(text), p=2, dim=-1)
    image_emb = anchor_embeddings(features, positives, paddings, count, module.shallow_contrastive_projection_image,
                                  zero_pads)
    image_emb = gather_tensors(image_emb).view(-1, image_emb.shape[-1])
    text_emb = gather_tensors(text_emb).view(-1, text_emb.shape[-1])
    logits = torch.matmul(image_emb, text_emb.t()) / module.shallow_log_scale.exp()
    logits = logits.masked_fill(~token_mask[None, :], MASKED_LOGIT)
    if anchor_mask is not None:
        logits = logits.masked_fill(~anchor_mask[:, None], MASKED_LOGIT)
    own_rows = slice(rank * batch * count, (rank + 1) * batch * count)
    own_columns = slice(rank * batch * TEXT_WIDTH, (rank + 1) * batch * TEXT_WIDTH)
    image_to_text = -(row_normalized(positives_map[own_rows]) * logits[own_rows].log_softmax(-1)).sum()
    text_to_image = -(row_normalized(positives_map[:, own_columns].t())
                      * logits[:, own_columns].t().log_softmax(-1)).sum()
    return (image_to_text + text_to_image) / 2 / num_pos_avg
