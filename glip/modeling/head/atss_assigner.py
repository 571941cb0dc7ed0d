"""ATSS anchor assignment (Adaptive Training Sample Selection, Zhang et al. 2020) as GLIP's loss computes it.

For every ground-truth box the `topk` anchors per pyramid level whose centres are closest (L2) to the box centre
are candidates; the IoU threshold of that box is the mean + unbiased std of its candidates' IoUs; a candidate is
positive if its IoU reaches the threshold and its centre lies inside the box by more than 0.01 px on all four
sides. An anchor that is positive for several boxes goes to the box with the highest IoU.

IoUs use the legacy "+1" pixel areas (`box_iou_legacy`). The sequence of tensor operations mirrors the reference
so that ties (equal distances in `topk`, equal IoUs in `max`) resolve the same way.
"""
from typing import Sequence

import torch

from glip.structures.boxlist_ops import box_iou_legacy

INF = 1e8


def box_centers(boxes: torch.Tensor) -> torch.Tensor:
    """Centres `(N, 2)` of xyxy boxes `(N, 4)`: `((x1 + x2) / 2, (y1 + y2) / 2)`."""
    cx = (boxes[:, 2] + boxes[:, 0]) / 2.0
    cy = (boxes[:, 3] + boxes[:, 1]) / 2.0
    return torch.stack((cx, cy), dim=1)


def atss_assign(anchors_per_level: Sequence[torch.Tensor], gt_boxes: torch.Tensor, topk: int = 9,
                num_anchors_per_location: int = 1) -> torch.Tensor:
    """Match anchors to ground-truth boxes with ATSS.

    Args:
        anchors_per_level: per pyramid level, anchors `(N_l, 4)` xyxy (one image, levels in order).
        gt_boxes: ground-truth boxes `(M, 4)` xyxy.
        topk: candidates per level and box (MODEL.ATSS.TOPK), times `num_anchors_per_location`.
        num_anchors_per_location: anchors per feature location (len(ASPECT_RATIOS) * SCALES_PER_OCTAVE).

    Returns:
        matched gt index per anchor `(sum N_l,)` int64, -1 for negatives.
    """
    anchors = torch.cat(list(anchors_per_level), dim=0)
    num_anchors = anchors.shape[0]
    num_gt = gt_boxes.shape[0]
    if num_gt == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)

    ious = box_iou_legacy(anchors, gt_boxes)                                     # (N, M)
    gt_points = box_centers(gt_boxes)
    anchor_points = box_centers(anchors)
    distances = (anchor_points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()

    candidates = []
    start = 0
    for level_anchors in anchors_per_level:
        end = start + level_anchors.shape[0]
        k = min(topk * num_anchors_per_location, level_anchors.shape[0])
        _, idx = distances[start:end, :].topk(k, dim=0, largest=False)
        candidates.append(idx + start)
        start = end
    candidate_idxs = torch.cat(candidates, dim=0)                              # (K, M)

    candidate_ious = ious[candidate_idxs, torch.arange(num_gt, device=anchors.device)]
    iou_thresh = candidate_ious.mean(0) + candidate_ious.std(0)
    is_pos = candidate_ious >= iou_thresh[None, :]

    cand_cx = anchor_points[:, 0][candidate_idxs]                               # (K, M)
    cand_cy = anchor_points[:, 1][candidate_idxs]
    left = cand_cx - gt_boxes[:, 0]
    top = cand_cy - gt_boxes[:, 1]
    right = gt_boxes[:, 2] - cand_cx
    bottom = gt_boxes[:, 3] - cand_cy
    is_in_gt = torch.stack([left, top, right, bottom], dim=1).min(dim=1)[0] > 0.01
    is_pos = is_pos & is_in_gt

    # (M, N) flattened: entry g * N + a holds the IoU of anchor a with gt g if a is a positive for g.
    flat_idxs = (candidate_idxs + torch.arange(num_gt, device=anchors.device) * num_anchors).view(-1)
    ious_inf = torch.full_like(ious, -INF).t().contiguous().view(-1)
    chosen = flat_idxs[is_pos.view(-1)]
    ious_inf[chosen] = ious.t().contiguous().view(-1)[chosen]
    ious_inf = ious_inf.view(num_gt, -1).t()

    best_values, best_idxs = ious_inf.max(dim=1)
    return torch.where(best_values == -INF, torch.full_like(best_idxs, -1), best_idxs)

