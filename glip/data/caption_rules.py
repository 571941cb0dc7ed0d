"""The reference's rules for caption (pseudo-labelled image-text) data: label formats, box screening and the
packing of negative captions (``CaptionTSV`` of GLIP's ``maskrcnn_benchmark/data/datasets/caption.py``).

A label row is json: ``caption`` (str), ``img_w`` / ``img_h`` (the pixel frame of the boxes), and per box
(format ``v1``) ``bboxes`` ``[x1, y1, x2, y2]``, ``scores`` and ``tokens_positive`` (list of ``[beg, end)``
character spans into the caption); format ``v2`` groups them per entity: ``bboxes[e]`` / ``scores[e]`` are the
boxes and scores of entity ``e`` and ``tokens_positive[e]`` its spans (:func:`flatten_v2` gives every box of an
entity all of that entity's spans).

Screening (:func:`screen_boxes`): keep boxes with ``score > conf`` (strict), then, when ``nms > 0``, one
class-agnostic NMS (torchvision's, IoU without +1) over all remaining boxes of the row whatever their phrase;
boxes come out in the NMS order (descending score).

Packing (:func:`negative_pack_number`, :func:`pack_caption`): the positive caption is joined with captions of
random other rows, each ending with ``"."`` and followed by a space, in random order; the boxes' spans shift
with the positive caption.
"""
import json
import random
from typing import List, Optional, Sequence, Tuple

import torch

Span = Tuple[int, int]
FORMAT_VERSIONS = ("v1", "v2")


class BadRowError(ValueError):
    """A label row that does not follow the caption layout (the message says what is wrong)."""


def parse_label(text: str) -> object:
    """The json of a label row; BadRowError when it is not json."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRowError("label is not json ({})".format(exc)) from exc


def _spans(value, where: str) -> List[Span]:
    if not isinstance(value, (list, tuple)):
        raise BadRowError("{}: tokens_positive must be a list of [beg, end] spans, got {!r}".format(where, value))
    spans = []
    for span in value:
        if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(isinstance(v, int) for v in span):
            raise BadRowError("{}: bad span {!r} (want [beg, end] integers)".format(where, span))
        spans.append((int(span[0]), int(span[1])))
    return spans


def _box(value, where: str) -> List[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 4 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise BadRowError("{}: a box must be 4 numbers [x1, y1, x2, y2], got {!r}".format(where, value))
    return [float(v) for v in value]


def _score(value, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BadRowError("{}: a score must be a number, got {!r}".format(where, value))
    return float(value)


def check_caption(anno) -> str:
    """The row's caption; BadRowError when the row is not a json object with a string ``caption``."""
    if not isinstance(anno, dict):
        raise BadRowError("label must be a json object, got {}".format(type(anno).__name__))
    caption = anno.get("caption")
    if not isinstance(caption, str):
        raise BadRowError("label has no string 'caption'")
    return caption


def read_boxes(anno: dict, version: str) -> Tuple[List[List[float]], List[float], List[List[Span]]]:
    """``(boxes, scores, spans per box)`` of a label row in format ``version`` (v2 flattened, :func:`flatten_v2`).

    Raises BadRowError when a key is missing, the per-box lists differ in length, or a value is malformed.
    """
    if version not in FORMAT_VERSIONS:
        raise ValueError("caption format version must be one of {}, got {!r}".format(FORMAT_VERSIONS, version))
    missing = [k for k in ("bboxes", "scores", "tokens_positive") if k not in anno]
    if missing:
        raise BadRowError("label lacks {}".format(missing))
    bboxes, scores, tokens = anno["bboxes"], anno["scores"], anno["tokens_positive"]
    if not all(isinstance(v, list) for v in (bboxes, scores, tokens)) or not len(bboxes) == len(scores) == len(tokens):
        raise BadRowError("bboxes, scores and tokens_positive must be lists of one length, got {}".format(
            [len(v) if isinstance(v, list) else type(v).__name__ for v in (bboxes, scores, tokens)]))
    if version == "v2":
        for e, (entity_boxes, entity_scores) in enumerate(zip(bboxes, scores)):
            if not isinstance(entity_boxes, list) or not isinstance(entity_scores, list) or \
                    len(entity_boxes) != len(entity_scores):
                raise BadRowError("v2 entity {}: bboxes and scores must be lists of one length".format(e))
        bboxes, scores, tokens = flatten_v2(bboxes, scores, tokens)
    boxes = [_box(b, "box {}".format(i)) for i, b in enumerate(bboxes)]
    return boxes, [_score(s, "box {}".format(i)) for i, s in enumerate(scores)], \
        [_spans(t, "box {}".format(i)) for i, t in enumerate(tokens)]


def flatten_v2(bboxes: Sequence[Sequence], scores: Sequence[Sequence], tokens_positive: Sequence) -> tuple:
    """Per-entity lists -> per-box lists: every box of entity ``e`` gets all of ``tokens_positive[e]``."""
    flat_boxes, flat_scores, flat_tokens = [], [], []
    for entity_boxes, entity_scores, spans in zip(bboxes, scores, tokens_positive):
        for box, score in zip(entity_boxes, entity_scores):
            flat_boxes.append(box)
            flat_scores.append(score)
            flat_tokens.append(spans)
    return flat_boxes, flat_scores, flat_tokens


def screen_boxes(boxes: Sequence[Sequence[float]], scores: Sequence[float], tokens: Sequence, conf: float,
                 nms: float, min_boxes: int = 0) -> Optional[tuple]:
    """The reference's ``FURTHER_SCREEN``: ``(boxes, scores, tokens)`` kept, or None when fewer than ``min_boxes``
    pass the confidence test (the reference then draws another row; the NMS result is not re-checked).

    Confidence is strict (``score > conf``); with ``nms > 0`` torchvision's NMS at IoU ``nms`` runs once over all
    kept boxes (whatever their phrase) and its order (descending score) is the output order.
    """
    box_t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    score_t = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    keep = (score_t > conf).nonzero().flatten().tolist()
    box_t, score_t, tokens = box_t[keep], score_t[keep], [tokens[i] for i in keep]
    if len(keep) < min_boxes:
        return None
    if nms > 0:
        from torchvision.ops import nms as tv_nms

        order = tv_nms(box_t, score_t, float(nms)).tolist()
        box_t, score_t, tokens = box_t[order], score_t[order], [tokens[i] for i in order]
    return box_t.tolist(), score_t.tolist(), tokens


def negative_pack_number(pack_number: int, random_pack_prob: float, no_random_pack_probability: float,
                         rng=random) -> int:
    """How many negative captions to pack (``PACK_RANDOM_CAPTION_NUMBER`` > 0).

    ``random_pack_prob == -1``: always ``pack_number``. Else (two separate draws, as the reference):
    ``rng.random() < no_random_pack_probability`` -> 0; ``rng.random() < random_pack_prob`` -> ``pack_number``;
    otherwise uniform in ``0 .. pack_number - 1``.
    """
    if random_pack_prob == -1.0:
        return pack_number
    if rng.random() < no_random_pack_probability:
        return 0
    if rng.random() < random_pack_prob:
        return pack_number
    return rng.randrange(pack_number)


def _num_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


def pack_caption(positive: str, negatives: Sequence[str], tokens_positive: Sequence[Sequence[Span]], tokenizer,
                 max_query_len: int, safeguard: bool = True, rng=random) -> Tuple[str, List[List[Span]], List[Span]]:
    """``(packed caption, shifted spans per box, [MLM span of the positive caption])``.

    No negatives: the caption and spans unchanged, MLM span the whole caption. With ``safeguard``, negatives are
    visited in random order and one is taken while its token count (with [CLS]/[SEP]) is below the budget left
    (``max_query_len`` minus the positive's count), the budget shrinking by each one taken. The kept captions
    (positive included) are shuffled and joined, each followed by ``"."`` (unless it ends with one) and ``" "``;
    the positive's start is that of the last item equal to it.
    """
    if not negatives:
        return positive, [list(map(tuple, spans)) for spans in tokens_positive], [(0, len(positive))]
    if safeguard:
        lengths = [_num_tokens(tokenizer, c) for c in list(negatives) + [positive]]
        budget = max_query_len - lengths[-1]
        order = list(range(len(negatives)))
        rng.shuffle(order)
        kept = [positive]
        for i in order:
            if lengths[i] < budget:
                kept.append(negatives[i])
                budget -= lengths[i]
    else:
        kept = [positive] + list(negatives)
    rng.shuffle(kept)
    packed, start = "", 0
    for text in kept:
        if text == positive:
            start = len(packed)
        packed += text
        if not text.endswith("."):
            packed += "."
        packed += " "
    shifted = [[(beg + start, end + start) for beg, end in spans] for spans in tokens_positive]
    return packed, shifted, [(start, start + len(positive))]


def inference_caption(anno) -> str:
    """The caption of a row read in the reference's inference-caption mode: a list -> its first item's
    ``caption``; a dict -> its ``caption`` when it has no ``captions`` list or nothing else, else the ``captions``
    joined by spaces."""
    if isinstance(anno, list):
        if not anno or not isinstance(anno[0], dict) or not isinstance(anno[0].get("caption"), str):
            raise BadRowError("inference-caption row: a list must start with an object holding 'caption'")
        return anno[0]["caption"]
    if not isinstance(anno, dict):
        raise BadRowError("inference-caption row must be a json object or list")
    if "caption" in anno and (len(anno) == 1 or "captions" not in anno):
        return check_caption(anno)
    captions = anno.get("captions")
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise BadRowError("inference-caption row has neither 'caption' nor a 'captions' list of strings")
    return " ".join(captions)
