"""Merging the detections of several test-time views, as the reference's `box_aug` (TEST.* keys).

All views of an image are concatenated (boxes in original-image pixels, xyxy), then, per class of `classes`
(TEST.SELECT_CLASSES, else 1 .. TEST.NUM_CLASSES - 1), suppressed with TEST.TH by one of TEST.SPECIAL_NMS:

* "none" / "nms": greedy NMS with the legacy +1 IoU (`glip.layers.nms.nms`, IoU > TH suppresses, as the
  reference's CUDA kernel);
* "vote": box voting: boxes are visited by descending score; each cluster of boxes with IoU >= TH to the best
  remaining box becomes one box, the score-weighted mean of the cluster, with the cluster's best score (a
  cluster of one box is kept as is);
* "soft-vote": voting, plus each other member of a cluster kept with its score times (1 - IoU) when that is at
  least `soft_vote_min_score` (MODEL.RETINANET.INFERENCE_TH), the result sorted by score;
* "soft-nms": Gaussian soft-NMS (sigma 0.95): scores decay by exp(-IoU^2 / sigma) and boxes whose score falls
  below TH are dropped.

With TH <= 0 a class is left as is. Finally at most `max_detections` (TEST.PRE_NMS_TOP_N) boxes are kept over
all classes: those scoring at least the max_detections-th best score (ties kept). The floating-point
operations follow the reference's (numpy float32 for voting, the C++ kernel's order for soft-NMS).
"""
import logging
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from glip.layers.nms import nms
from glip.structures.bounding_box import BoxList
from glip.structures.boxlist_ops import cat_boxlist

logger = logging.getLogger(__name__)

NMS_TYPES = ("none", "nms", "vote", "soft-vote", "soft-nms")
SOFT_NMS_SIGMA = 0.95


def keep_by_area(boxlist: BoxList, min_scale: float, max_scale: float) -> BoxList:
    """Boxes with min_scale^2 < (w + 1)(h + 1) < max_scale^2 (TEST.RANGES of a scale, in that view's pixels)."""
    boxes = boxlist.convert("xyxy").bbox
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = torch.nonzero((area > min_scale * min_scale) & (area < max_scale * max_scale)).squeeze(1)
    return boxlist[keep]


def _overlaps(det: np.ndarray) -> np.ndarray:
    """IoU (+1 widths) of the first row of `det (n, 5)` with every row, in det's dtype."""
    area = (det[:, 2] - det[:, 0] + 1) * (det[:, 3] - det[:, 1] + 1)
    xx1 = np.maximum(det[0, 0], det[:, 0])
    yy1 = np.maximum(det[0, 1], det[:, 1])
    xx2 = np.minimum(det[0, 2], det[:, 2])
    yy2 = np.minimum(det[0, 3], det[:, 3])
    inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area[0] + area[:] - inter)


def _cluster(det: np.ndarray, thresh: float):
    """(indices of the rows voting with row 0, their IoUs); row 0 always belongs to its own cluster (the
    reference loops forever on a box whose self-IoU is NaN)."""
    overlaps = _overlaps(det)
    members = np.where(overlaps >= thresh)[0]
    if members.size == 0 or members[0] != 0:
        members = np.concatenate([[0], members[members != 0]])
    return members, overlaps[members]


def _weighted_box(cluster: np.ndarray) -> np.ndarray:
    """(1, 5): the score-weighted mean box of `cluster (k, 5)` with the cluster's best score."""
    weighted = cluster.copy()
    weighted[:, 0:4] = weighted[:, 0:4] * np.tile(weighted[:, -1:], (1, 4))
    out = np.zeros((1, 5))
    out[:, 0:4] = np.sum(weighted[:, 0:4], axis=0) / np.sum(weighted[:, -1:])
    out[:, 4] = np.max(cluster[:, 4])
    return out


def _sorted_dets(boxes: torch.Tensor, scores: torch.Tensor) -> np.ndarray:
    det = np.concatenate((boxes.cpu().numpy(), scores.cpu().numpy().reshape(-1, 1)), axis=1)
    return det[det[:, 4].ravel().argsort()[::-1], :]


def box_vote(boxes: torch.Tensor, scores: torch.Tensor, thresh: float,
             soft_min_score: Optional[float] = None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Box voting ("vote"), or soft voting when `soft_min_score` is given ("soft-vote"); see the module doc.

    `boxes (n, 4)` xyxy, `scores (n,)`. Returns `(boxes (m, 4), scores (m,))` float32 on the input device, or
    None for fewer than two boxes (the reference then keeps them unchanged).
    """
    if boxes.shape[0] <= 1:
        return None
    det = _sorted_dets(boxes, scores)
    out = []
    while det.shape[0] > 0:
        members, overlaps = _cluster(det, thresh)
        cluster = det[members, :]
        det = np.delete(det, members, 0)
        if members.shape[0] <= 1:
            out.append(cluster)
            continue
        merged = _weighted_box(cluster)
        if soft_min_score is not None:
            soft = cluster.copy()
            soft[:, 4] = soft[:, 4] * (1 - overlaps)
            soft = soft[np.where(soft[:, 4] >= soft_min_score)[0], :]
            if soft.shape[0] > 0:
                merged = np.vstack((merged, soft))
        out.append(merged)
    dets = np.vstack(out)
    if soft_min_score is not None:
        dets = dets[dets[:, 4].ravel().argsort()[::-1], :]
    return (torch.from_numpy(np.ascontiguousarray(dets[:, :4])).float().to(boxes.device),
            torch.from_numpy(np.ascontiguousarray(dets[:, 4])).float().to(boxes.device))


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float,
             sigma: float = SOFT_NMS_SIGMA) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS of xyxy `boxes (n, 4)`: `(kept indices (k,), their decayed scores (k,))`.

    The reference's C++ kernel: at step i the best remaining box is swapped to position i, the later boxes'
    scores are multiplied by exp(-IoU^2 / sigma) (+1 IoU) and a box whose score drops below `score_thresh`
    is replaced by the last one.
    """
    det = boxes.detach().cpu().numpy().astype(np.float32).copy()
    s = scores.detach().cpu().numpy().astype(np.float32).copy()
    inds = np.arange(det.shape[0], dtype=np.int64)
    areas = (det[:, 2] - det[:, 0] + np.float32(1)) * (det[:, 3] - det[:, 1] + np.float32(1))
    sigma, score_thresh = float(np.float32(sigma)), np.float32(score_thresh)
    n, i = det.shape[0], 0
    while i < n:
        best = i + int(np.argmax(s[i:n]))
        for array in (det, s, inds, areas):
            array[[i, best]] = array[[best, i]]
        j = i + 1
        while j < n:
            w = max(np.float32(0), min(det[i, 2], det[j, 2]) - max(det[i, 0], det[j, 0]) + np.float32(1))
            h = max(np.float32(0), min(det[i, 3], det[j, 3]) - max(det[i, 1], det[j, 1]) + np.float32(1))
            inter = np.float32(w * h)
            overlap = np.float32(inter / (areas[i] + areas[j] - inter))
            s[j] = np.float32(float(s[j]) * math.exp(-(float(overlap) ** 2) / sigma))
            if s[j] < score_thresh:
                for array in (det, s, inds, areas):
                    array[j] = array[n - 1]
                n -= 1
                continue
            j += 1
        i += 1
    return (torch.from_numpy(inds[:n].copy()).to(boxes.device),
            torch.from_numpy(s[:n].copy()).to(scores.device))


def suppress_class(boxlist: BoxList, thresh: float, nms_type: str = "none",
                   soft_vote_min_score: float = 0.05) -> BoxList:
    """The reference's `boxlist_nms` of one class's boxes (field `scores`) with `nms_type` (module doc)."""
    if nms_type not in NMS_TYPES:
        raise ValueError("TEST.SPECIAL_NMS must be one of {}, got {!r}".format(NMS_TYPES, nms_type))
    if thresh <= 0:
        return boxlist
    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    boxes, scores = boxlist.bbox, boxlist.get_field("scores")
    if nms_type in ("vote", "soft-vote"):
        voted = box_vote(boxes, scores, thresh, soft_vote_min_score if nms_type == "soft-vote" else None)
        if voted is not None and len(voted[0]) > 0:
            boxlist = BoxList(voted[0], boxlist.size, mode="xyxy")
            boxlist.add_field("scores", voted[1])
    elif nms_type == "soft-nms":
        keep, new_scores = soft_nms(boxes, scores, thresh)
        boxlist = boxlist[keep]
        boxlist.add_field("scores", new_scores)
    else:
        boxlist = boxlist[nms(boxes, scores, thresh)]
    return boxlist.convert(mode)


def limit_detections(boxlist: BoxList, max_detections: int) -> BoxList:
    """Keep the boxes scoring at least the `max_detections`-th best score when there are more (0: no limit)."""
    count = len(boxlist)
    if not count > max_detections > 0:
        return boxlist
    scores = boxlist.get_field("scores")
    threshold, _ = torch.kthvalue(scores.cpu(), count - max_detections + 1)
    return boxlist[torch.nonzero(scores >= threshold.item()).squeeze(1)]


def merge_detections(boxlist: BoxList, classes: Sequence[int], nms_thresh: float, nms_type: str = "none",
                     max_detections: int = 1000, soft_vote_min_score: float = 0.05) -> BoxList:
    """All views' detections of one image (xyxy, fields `scores`, `labels`) -> the merged detections, grouped by
    class in the order of `classes`; labels outside `classes` are dropped (logged)."""
    labels, scores, boxes = boxlist.get_field("labels"), boxlist.get_field("scores"), boxlist.bbox
    dropped = sorted(set(labels.tolist()) - {int(c) for c in classes})
    if dropped:
        logger.warning("test-time augmentation drops the detections of labels %s: they are outside TEST.SELECT_CLASSES"
                       " / 1 .. TEST.NUM_CLASSES - 1 (%d)", dropped, len(classes))
    per_class = []
    for label in classes:
        index = torch.nonzero(labels == label).view(-1)
        one = BoxList(boxes[index, :].view(-1, 4), boxlist.size, mode="xyxy")
        one.add_field("scores", scores[index])
        one = suppress_class(one, nms_thresh, nms_type, soft_vote_min_score)
        one.add_field("labels", torch.full((len(one),), int(label), dtype=torch.int64, device=scores.device))
        per_class.append(one)
    if not per_class:
        empty = BoxList(boxes.new_zeros((0, 4)), boxlist.size, mode="xyxy")
        empty.add_field("scores", scores.new_zeros((0,)))
        empty.add_field("labels", labels.new_zeros((0,)))
        return empty
    return limit_detections(cat_boxlist(per_class), max_detections)
