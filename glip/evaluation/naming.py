"""Top-1 naming of ground-truth boxes: which name a detector puts on each object, as a demo draws it.

COCO AP ranks every category's detections across images, so a category can score well while another name wins
on most of its objects. What a demo shows is the best-scoring name on each object; :func:`top1_names` measures
that: for every ground-truth box, the category of the highest-scoring detection overlapping it at IoU >= 0.5
(any category), and :func:`summarize_naming` counts right / wrong / missed per group of categories, with the
wrong names split by which words they share with the right one ("red circle" for a red triangle: word 0 right).
With ``min_score`` both count only the detections a drawing at that score threshold shows: an object whose best
detection scores lower is not drawn (missed), and :func:`boxes_without_object` counts the drawn boxes that cover
no object.
"""
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np


def _iou_xywh(box: Sequence[float], others: np.ndarray) -> np.ndarray:
    """IoU of one xywh box with (K, 4) xywh boxes."""
    if len(others) == 0:
        return np.zeros(0)
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y1 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + others[:, 2] * others[:, 3] - inter
    return inter / np.maximum(union, 1e-12)


def _by_image(detections: Iterable[dict], min_score: float) -> Dict[int, tuple]:
    """{image_id: ((K, 4) xywh boxes, (K,) scores, [category_id] * K)} of the detections scoring >= min_score."""
    by_image: Dict[int, list] = {}
    for d in detections:
        if d["score"] >= min_score:
            by_image.setdefault(d["image_id"], []).append(d)
    return {i: (np.asarray([d["bbox"] for d in ds], dtype=np.float64).reshape(-1, 4),
                np.asarray([d["score"] for d in ds], dtype=np.float64),
                [d["category_id"] for d in ds]) for i, ds in by_image.items()}


def top1_names(gt: dict, detections: Iterable[dict], iou: float = 0.5,
               min_score: float = float("-inf")) -> List[Optional[int]]:
    """Per annotation of the COCO json ``gt`` (in its order): the ``category_id`` of the highest-scoring
    detection (COCO results: ``image_id``, ``bbox`` xywh, ``category_id``, ``score``) scoring >= ``min_score``
    whose box overlaps it at IoU >= ``iou``, or None when no detection does."""
    arrays = _by_image(detections, min_score)
    out = []
    for ann in gt["annotations"]:
        boxes, scores, cats = arrays.get(ann["image_id"], (np.zeros((0, 4)), np.zeros(0), []))
        hits = np.nonzero(_iou_xywh(ann["bbox"], boxes) >= iou)[0]
        out.append(cats[hits[np.argmax(scores[hits])]] if len(hits) else None)
    return out


def boxes_without_object(gt: dict, detections: Iterable[dict], iou: float = 0.5,
                         min_score: float = float("-inf")) -> int:
    """How many detections scoring >= ``min_score`` overlap no annotation of their image at IoU >= ``iou``: the
    boxes a drawing at that threshold shows where there is no object."""
    boxes_of: Dict[int, list] = {}
    for ann in gt["annotations"]:
        boxes_of.setdefault(ann["image_id"], []).append(ann["bbox"])
    count = 0
    for image_id, (boxes, _, _) in _by_image(detections, min_score).items():
        truth = np.asarray(boxes_of.get(image_id, []), dtype=np.float64).reshape(-1, 4)
        count += sum(not (_iou_xywh(box, truth) >= iou).any() for box in boxes)
    return count


def summarize_naming(gt: dict, names: Sequence[Optional[int]], groups: Dict[str, Iterable[int]]) -> dict:
    """``{group: {"objects", "right", "wrong", "missed", "word_right": {word index: count among the wrong}}}``
    for ``names`` from :func:`top1_names`; ``groups`` maps a name to the category ids it holds."""
    words = {c["id"]: c["name"].split() for c in gt["categories"]}
    out = {}
    for group, ids in groups.items():
        ids = set(ids)
        counts, word_right = Counter(), Counter()
        for ann, named in zip(gt["annotations"], names):
            if ann["category_id"] not in ids:
                continue
            counts["objects"] += 1
            if named is None:
                counts["missed"] += 1
            elif named == ann["category_id"]:
                counts["right"] += 1
            else:
                counts["wrong"] += 1
                truth, guess = words[ann["category_id"]], words.get(named, [])
                word_right.update(k for k in range(min(len(truth), len(guess))) if truth[k] == guess[k])
        out[group] = {"objects": counts["objects"], "right": counts["right"], "wrong": counts["wrong"],
                      "missed": counts["missed"], "word_right": dict(sorted(word_right.items()))}
    return out
