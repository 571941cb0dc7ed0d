"""Per-sample target fields of grounding data (the reference's ``ConvertCocoPolysToMask``).

From json-style annotations and a caption it builds the dict of tensors every grounding dataset attaches to its
``BoxList``: boxes, labels, caption, ``tokens_positive``, the normalised ``positive_map`` (boxes x 256),
``greenlight_map`` (MLM-maskable tokens) and ``positive_map_for_od_labels`` (token -> detection label).
"""
from typing import Dict, List, Optional, Sequence

import torch

from glip.data.positive_map import (
    MAX_QUERY_LEN,
    create_greenlight_map,
    create_positive_map,
    create_positive_map_for_od_labels,
)


def prepare_grounding_target(
    image_size,
    annotations: Sequence[dict],
    image_id,
    caption: Optional[str] = None,
    tokenizer=None,
    box_format: str = "xywh",
    return_tokens: bool = True,
    max_query_len: int = MAX_QUERY_LEN,
    greenlight_spans: Optional[Sequence] = None,
    label_to_positions: Optional[Dict[int, List[int]]] = None,
    ignore_box_screen: bool = False,
) -> Dict[str, object]:
    """Target dict of one image of size ``image_size = (w, h)``.

    * Crowd annotations (``iscrowd == 1``) are ignored.
    * ``box_format="xywh"``: ``x2 = x + w - 1``, ``y2 = y + h - 1`` (legacy +1 pixels), then clamped to
      ``[0, w-1] x [0, h-1]``. ``"xyxy"`` boxes are used as given.
    * Boxes with ``x2 <= x1`` or ``y2 <= y1`` are dropped with their label, span, area and crowd flag; ``"keep"``
      holds the boolean mask over the non-crowd annotations so callers can filter a parallel ``BoxList``.
    * Spans come from ``obj["tokens"]`` or ``obj["tokens_positive"]``; the positive map uses the caption
      tokenized with truncation at ``max_query_len``.
    """
    w, h = image_size
    anno = [obj for obj in annotations if obj.get("iscrowd", 0) == 0]
    boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
    if box_format == "xywh":
        boxes[:, 2:] += boxes[:, :2] - 1
        boxes[:, 0::2].clamp_(min=0, max=w - 1)
        boxes[:, 1::2].clamp_(min=0, max=h - 1)
    classes = torch.tensor([obj["category_id"] for obj in anno], dtype=torch.int64)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])

    target: Dict[str, object] = {"boxes": boxes[keep], "labels": classes[keep]}
    if caption is not None:
        target["caption"] = caption
    target["image_id"] = torch.tensor([image_id]) if isinstance(image_id, int) else image_id

    tokens_positive = None
    if return_tokens:
        key = "tokens" if anno and "tokens" in anno[0] else "tokens_positive"
        spans = [obj.get(key) or [] for obj in anno]
        tokens_positive = [s for s, k in zip(spans, keep.tolist()) if k or ignore_box_screen]
        target["tokens_positive"] = tokens_positive
    if anno and "isfinal" in anno[0]:
        target["isfinal"] = torch.as_tensor([obj["isfinal"] for obj in anno], dtype=torch.float)[keep]

    areas = [float(obj["area"]) if "area" in obj else float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
             for obj, b in zip(anno, boxes.tolist())]
    target["area"] = torch.tensor(areas, dtype=torch.float32)[keep]
    target["iscrowd"] = torch.zeros(int(keep.sum()), dtype=torch.int64)
    target["orig_size"] = torch.as_tensor([int(h), int(w)])
    target["size"] = torch.as_tensor([int(h), int(w)])

    if return_tokens and tokenizer is not None and caption is not None:
        tokenized = tokenizer(caption, return_tensors="pt", max_length=max_query_len, truncation=True)
        target["positive_map"] = create_positive_map(tokenized, tokens_positive)
        target["greenlight_map"] = create_greenlight_map(greenlight_spans or [], tokenized)
        target["positive_map_for_od_labels"] = create_positive_map_for_od_labels(tokenized, label_to_positions or {})

    target["original_od_label"] = torch.as_tensor(
        [obj.get("original_od_label", -10) for obj in anno], dtype=torch.int64)[keep]
    target["keep"] = keep
    return target


CHAR_SPAN_FIELDS = ("tokens_positive", "tokens")


def follow_caption_edits(fields: Dict[str, object], caption) -> Dict[str, object]:
    """``fields`` with their character spans moved onto the edited caption.

    ``caption`` is the ``glip.data.transforms.Caption`` after the transforms; when a transform edited its text
    (AUGMENT.FLIP_SWAP_LEFT_RIGHT) the per-box spans (``tokens_positive``) and ``label_to_positions`` follow the
    words. Token-level maps (``positive_map``, ``greenlight_map``, ``positive_map_for_od_labels``) stay as they
    are: the swap is only made when it keeps every token in place.
    """
    if not getattr(caption, "edits", ()):
        return fields
    moved = dict(fields)
    for key in CHAR_SPAN_FIELDS:
        if moved.get(key) is not None:
            moved[key] = [[list(caption.move_span(beg, end)) for beg, end in spans] for spans in moved[key]]
    if moved.get("label_to_positions") is not None:
        moved["label_to_positions"] = {label: list(caption.move_span(*span))
                                       for label, span in moved["label_to_positions"].items()}
    return moved


def attach_fields(boxlist, fields: Dict[str, object], skip=("keep",)):
    """Add every entry of ``fields`` (except ``skip``) to ``boxlist`` as an extra field; returns it.

    ``fields`` were computed on the caption before the transforms; if ``boxlist`` carries the transformed
    ``Caption`` and a transform edited it, the character spans follow first (``follow_caption_edits``).
    """
    if boxlist.has_field("caption"):
        fields = follow_caption_edits(fields, boxlist.get_field("caption"))
    for key, value in fields.items():
        if key not in skip:
            boxlist.add_field(key, value)
    return boxlist
