"""Greedy (multi-label) non-maximum suppression with the legacy +1 IoU, as the reference CUDA `ml_nms`.

Semantics: boxes are visited in descending score order (stable sort); a box is kept unless an already kept box
of the same label overlaps it with IoU > threshold (strict), where IoU uses +1 widths. The compiled op from
`glip.layers.extension` is used when available, otherwise an exact PyTorch implementation.
"""
import numpy as np
import torch

from glip.layers import extension

_TO_REMOVE = 1
_ROW_CHUNK = 256


def _pairwise_iou(boxes_a, boxes_b):
    """IoU `(N, M)` of xyxy boxes with +1 widths, in the CUDA kernel's float operation order."""
    left = torch.max(boxes_a[:, None, 0], boxes_b[None, :, 0])
    right = torch.min(boxes_a[:, None, 2], boxes_b[None, :, 2])
    top = torch.max(boxes_a[:, None, 1], boxes_b[None, :, 1])
    bottom = torch.min(boxes_a[:, None, 3], boxes_b[None, :, 3])
    width = (right - left + _TO_REMOVE).clamp(min=0)
    height = (bottom - top + _TO_REMOVE).clamp(min=0)
    inter = width * height
    area_a = (boxes_a[:, 2] - boxes_a[:, 0] + _TO_REMOVE) * (boxes_a[:, 3] - boxes_a[:, 1] + _TO_REMOVE)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0] + _TO_REMOVE) * (boxes_b[:, 3] - boxes_b[:, 1] + _TO_REMOVE)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _suppression_matrix(boxes, threshold):
    """`(N, N)` bool numpy array: (i, j) is True iff j >= i's row chunk start and IoU(i, j) > threshold.

    Only the upper part matters for the greedy pass (a box suppresses later boxes); row chunks bound memory.
    """
    n = boxes.shape[0]
    out = np.zeros((n, n), dtype=bool)
    for start in range(0, n, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, n)
        out[start:stop, start:] = (_pairwise_iou(boxes[start:stop], boxes[start:]) > threshold).cpu().numpy()
    return out


def _greedy_keep(boxes, threshold):
    """Greedy NMS of score-sorted boxes `(n, 4)` of one label: bool numpy mask of the kept ones."""
    n = boxes.shape[0]
    keep = np.zeros(n, dtype=bool)
    if n == 1:
        keep[0] = True
        return keep
    suppresses = _suppression_matrix(boxes, threshold)
    removed = np.zeros(n, dtype=bool)
    for i in range(n):
        if removed[i]:
            continue
        keep[i] = True
        removed |= suppresses[i]
    return keep


def _greedy_nms(boxes, scores, labels, threshold):
    """Exact greedy multi-label NMS, run per label on the score-sorted boxes (boxes of different labels never
    interact). Returns kept indices `(K,)` int64 in descending score order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order].float()
    labels_sorted, by_label = torch.sort(labels[order], stable=True)
    counts = torch.unique_consecutive(labels_sorted, return_counts=True)[1]
    keep = np.zeros(boxes.shape[0], dtype=bool)
    for group in by_label.split(counts.tolist()):
        group_keep = _greedy_keep(boxes[group], threshold)
        keep[group.cpu().numpy()[group_keep]] = True
    kept_positions = torch.from_numpy(np.flatnonzero(keep)).to(order.device)
    return order[kept_positions]


def ml_nms(boxes, scores, labels, threshold):
    """Multi-label NMS of xyxy `boxes (N, 4)`, `scores (N,)`, `labels (N,)`; suppression only within a label.

    Returns the kept indices `(K,)` int64 in descending score order (stable for ties).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if extension.supports(boxes.device):
        return extension.ml_nms(boxes, scores, labels, threshold)
    return _greedy_nms(boxes, scores, labels, threshold)


def nms(boxes, scores, threshold):
    """Class-agnostic NMS with the same +1 IoU and strict `>`; kept indices `(K,)` int64 by descending score."""
    labels = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    return ml_nms(boxes, scores, labels, threshold)
