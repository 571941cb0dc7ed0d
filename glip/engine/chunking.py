"""Splitting a category list that does not fit one prompt into prompts of whole categories.

BERT sees at most MAX_QUERY_LEN (256) tokens; the model truncates longer prompts, so categories past the limit
could never be detected. A category prompt is `name . name . ... name . ` ([CLS] + tokens + [SEP]); the token
count of that prompt is the sum of the names' WordPiece counts plus one per separator plus two, because BERT's
basic tokenizer splits on whitespace and punctuation. Chunks are filled greedily in the given order, so the
prompt is the same single chunk whenever everything fits. A prompt also holds at most as many categories as the
post-processor has class columns (NUM_CLASSES - 1 = 80 for the released configs, or
TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM), because labels are numbered within the prompt. Each chunk is run
separately, its labels (1-based inside the chunk) are mapped back to the global list (`map_labels`), and the
per-chunk detections are merged with per-class NMS and the per-image detection cap (`merge_chunk_detections`).
"""
from typing import List, Sequence

import torch

from glip.structures.bounding_box import BoxList
from glip.structures.boxlist_ops import boxlist_ml_nms, cat_boxlist

CATEGORY_SEPARATOR = " . "


def category_token_counts(names: Sequence[str], tokenizer, separator: str = CATEGORY_SEPARATOR) -> List[int]:
    """Tokens each name takes inside a category prompt, its separator included."""
    sep_tokens = len(tokenizer(separator.strip(), add_special_tokens=False)["input_ids"]) if separator.strip() else 0
    encoded = tokenizer(list(names), add_special_tokens=False)["input_ids"]
    return [len(ids) + sep_tokens for ids in encoded]


def chunk_categories(names: Sequence[str], tokenizer, max_len: int = 256,
                     separator: str = CATEGORY_SEPARATOR, max_names: int = 0) -> List[List[int]]:
    """Indices (0-based, in order) of the categories of each chunk; every chunk's prompt has <= `max_len` tokens
    and, when `max_names > 0`, at most `max_names` categories (the post-processor scores at most
    NUM_CLASSES - 1 labels per prompt, or TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM).

    Raises ValueError when a single name does not fit on its own.
    """
    budget = max_len - 2  # [CLS] and [SEP]
    chunks: List[List[int]] = []
    current: List[int] = []
    used = 0
    for index, count in enumerate(category_token_counts(names, tokenizer, separator)):
        if count > budget:
            raise ValueError(f"category {names[index]!r} alone takes {count} tokens, more than the "
                             f"{budget} a prompt of {max_len} tokens holds")
        if used + count > budget or 0 < max_names <= len(current):
            chunks.append(current)
            current, used = [], 0
        current.append(index)
        used += count
    if current:
        chunks.append(current)
    return chunks


def map_labels(prediction: BoxList, chunk: Sequence[int]) -> BoxList:
    """Replace the chunk-local 1-based labels of `prediction` by global 1-based labels (in place; returned)."""
    lookup = torch.as_tensor(list(chunk), dtype=torch.int64) + 1
    labels = prediction.get_field("labels")
    prediction.add_field("labels", lookup.to(labels.device)[labels - 1])
    return prediction


def merge_chunk_detections(predictions: Sequence[BoxList], nms_thresh: float, max_detections: int = 0) -> BoxList:
    """One BoxList from per-chunk BoxLists of the same image (labels already global).

    Per-class NMS at `nms_thresh`, then the detections scoring at least the `max_detections`-th best are kept
    (all when `max_detections <= 0`), as the model does within one prompt. Sorted by score, descending.
    """
    merged = cat_boxlist(list(predictions)) if len(predictions) > 1 else predictions[0]
    merged = boxlist_ml_nms(merged, nms_thresh)
    scores = merged.get_field("scores")
    if 0 < max_detections < len(merged):
        thresh = torch.kthvalue(scores.cpu().float(), len(merged) - max_detections + 1).values.item()
        merged = merged[torch.nonzero(scores >= thresh).squeeze(1)]
        scores = merged.get_field("scores")
    order = torch.sort(scores, descending=True, stable=True).indices
    return merged[order]
