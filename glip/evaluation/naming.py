"""Top-1 naming of ground-truth boxes: which name a detector puts on each object, as a demo draws it.

COCO AP ranks every category's detections across images, so a category can score well while another name wins
on most of its objects. What a demo shows is the best-scoring name on each object; :func:`top1_names` measures
that: for every ground-truth box, the category of the highest-scoring detection overlapping it at IoU >= 0.5
(any category), and :func:`summarize_naming` counts right / wrong / missed per group of categories, with the
wrong names split by which words they share with the right one ("red circle" for a red triangle: word 0 right).
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


def top1_names(gt: dict, detections: Iterable[dict], iou: float = 0.5) -> List[Optional[int]]:
    """Per annotation of the COCO json ``gt`` (in its order): the ``category_id`` of the highest-scoring
    detection (COCO results: ``image_id``, ``bbox`` xywh, ``category_id``, ``score``) whose box overlaps it at
    IoU >= ``iou``, or None when no detection does."""
    by_image: Dict[int, list] = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    arrays = {i: (np.asarray([d["bbox"] for d in ds], dtype=np.float64).reshape(-1, 4),
                  np.asarray([d["score"] for d in ds], dtype=np.float64),
                  [d["category_id"] for d in ds]) for i, ds in by_image.items()}
    out = []
    for ann in gt["annotations"]:
        boxes, scores, cats = arrays.get(ann["image_id"], (np.zeros((0, 4)), np.zeros(0), []))
        hits = np.nonzero(_iou_xywh(ann["bbox"], boxes) >= iou)[0]
        out.append(cats[hits[np.argmax(scores[hits])]] if len(hits) else None)
    return out


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
