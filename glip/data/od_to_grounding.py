"""Detection annotations turned into grounding samples: a caption of class names plus per-box character spans.

Two conversions, as in the reference:

* :func:`convert_od_to_grounding_simple` (COCO / ODinW / custom json): the caption lists **every** class of the
  dataset (``ind_to_class``, label order, or shuffled unless ``disable_shuffle``), joined by ``separation_tokens``;
  optional ``"object detection : "`` prefix and manual per-class ``caption_prompt`` (prefix/name/suffix; only
  allowed with shuffling disabled).
* :func:`convert_od_to_grounding_with_negatives` (Objects365 / LVIS as grounding): the caption holds the image's
  positive classes plus sampled negative classes (``RANDOM_SAMPLE_NEG``, ``CONTROL_PROB``), shuffled, and limited
  to the text budget (``max_seq_length`` tokens) by :func:`check_for_positive_overflow` (positives that do not fit
  are dropped with their boxes) and a pre-screen of negatives.

Boxes whose label is not in the caption get no span and are dropped from the sample.
"""
import logging
import random
from typing import Dict, List, Optional, Sequence, Tuple


from glip.data.positive_map import clean_name

logger = logging.getLogger(__name__)

DETECTION_PROMPT = "object detection : "
DETECTION_QUERY_PROMPT = "object detection query : "


def _caption_from_labels(
    label_list: Sequence[int],
    ind_to_class: Dict[int, str],
    separation_tokens: str,
    prefix: str = "",
    caption_prompt: Optional[Sequence[dict]] = None,
) -> Tuple[Dict[int, List[int]], str]:
    """``(label -> [beg, end], caption)`` for the labels in the given order."""
    caption = prefix
    label_to_positions: Dict[int, List[int]] = {}
    for index, label in enumerate(label_list):
        if caption_prompt is not None:
            caption += caption_prompt[index]["prefix"]
        beg = len(caption)
        name = caption_prompt[index]["name"] if caption_prompt is not None else ind_to_class[label]
        caption += clean_name(name)
        label_to_positions[label] = [beg, len(caption)]
        if caption_prompt is not None:
            caption += caption_prompt[index]["suffix"]
        if index != len(label_list) - 1:
            caption += separation_tokens
    return label_to_positions, caption


def _spans_for_boxes(labels: Sequence[int], label_to_positions: Dict[int, List[int]]):
    """Per box: its span list (or None when its class is not in the caption) and the MLM-maskable spans."""
    tokens_positive, greenlight = [], []
    for label in labels:
        if label in label_to_positions:
            tokens_positive.append([label_to_positions[label]])
            greenlight.append(label_to_positions[label])
        else:
            tokens_positive.append(None)
    return tokens_positive, greenlight


def convert_od_to_grounding_simple(
    labels: Sequence[int],
    ind_to_class: Dict[int, str],
    disable_shuffle: bool = True,
    add_detection_prompt: bool = False,
    separation_tokens: str = " ",
    caption_prompt: Optional[Sequence[dict]] = None,
    rng: Optional[random.Random] = None,
) -> Tuple[List[Optional[list]], str, List[List[int]], Dict[int, List[int]]]:
    """All classes of ``ind_to_class`` (sorted keys; include no background key) as one caption.

    Returns ``(tokens_positive per box (None if absent), caption, greenlight spans, label_to_positions)``.
    """
    rng = rng or random
    label_list = sorted(ind_to_class.keys())
    if not disable_shuffle:
        if caption_prompt is not None:
            raise ValueError("CAPTION_PROMPT requires DISABLE_SHUFFLE (prompt entries follow label order)")
        rng.shuffle(label_list)
    prefix = DETECTION_PROMPT if add_detection_prompt else ""
    label_to_positions, caption = _caption_from_labels(label_list, ind_to_class, separation_tokens, prefix,
                                                       caption_prompt)
    tokens_positive, greenlight = _spans_for_boxes(labels, label_to_positions)
    return tokens_positive, caption, greenlight, label_to_positions


def _num_tokens(tokenizer, label: int, ind_to_class: Dict[int, str]) -> int:
    return len(tokenizer.tokenize(clean_name(ind_to_class[label]) + ". "))


def check_for_positive_overflow(
    labels: Sequence[int], ind_to_class: Dict[int, str], tokenizer, max_seq_length: int = 256,
    rng: Optional[random.Random] = None,
) -> Tuple[List[int], int]:
    """Keep as many positive classes (in random order) as fit ``max_seq_length`` tokens of ``"name. "`` each.

    Returns ``(indices of the boxes to keep, token length counted)``; the length includes the first class that
    did not fit, as the reference counts it before breaking.
    """
    rng = rng or random
    positive = list(set(int(label) for label in labels))
    rng.shuffle(positive)
    kept, length = set(), 0
    for label in positive:
        length += _num_tokens(tokenizer, label, ind_to_class)
        if length > max_seq_length:
            break
        kept.add(label)
    keep = [i for i, label in enumerate(labels) if int(label) in kept]
    return keep, length


def generate_control_options(
    control_probabilities: Sequence[float], full_positive: int, full_negative: int, rng: Optional[random.Random] = None
) -> Tuple[int, int]:
    """``(num_negatives, num_positives)`` from ``CONTROL_PROB = (one_negative, one_positive, full, drop_positive)``.

    With probability p0 one negative, p1 no negatives, p2 all ``full_negative``; otherwise a uniform draw in
    ``1..max(1, full_negative)``. ``num_positives`` is returned for completeness; callers keep every positive.
    """
    rng = rng or random
    p_one_neg, p_one_pos, p_full, p_drop_pos = control_probabilities
    if p_drop_pos != 0:
        raise ValueError("CONTROL_PROB[3] (dropping positives) must be 0, as in the reference")
    draw = rng.random()
    if draw < p_one_neg:
        return 1, 0
    if draw < p_one_neg + p_one_pos:
        return 0, 1
    if draw < p_one_neg + p_one_pos + p_full:
        return full_negative, full_positive
    return rng.randrange(max(1, full_negative)) + 1, full_positive


def convert_od_to_grounding_with_negatives(
    labels: Sequence[int],
    ind_to_class: Dict[int, str],
    tokenizer,
    disable_shuffle: bool = False,
    add_detection_prompt: bool = False,
    add_detection_prompt_advanced: bool = False,
    random_sample_negative: int = -1,
    control_probabilities: Sequence[float] = (0.0, 0.0, 1.0, 0.0),
    restricted_negative_list: Optional[Sequence[int]] = None,
    separation_tokens: str = " ",
    max_num_labels: int = -1,
    max_seq_length: int = 256,
    positive_caption_length: int = 0,
    rng: Optional[random.Random] = None,
) -> Tuple[List[Optional[list]], str, List[List[int]], Dict[int, List[int]]]:
    """Positives + sampled negatives as a shuffled caption (the reference's ``..._optimized_for_od``).

    * ``disable_shuffle``: every class of ``ind_to_class`` (label 0 / ``__background__`` excluded) in label order.
    * else: ``full_negative = random_sample_negative`` (capped by ``max_num_labels - #positives`` when
      ``max_num_labels > 0`` and by the number of candidate classes); :func:`generate_control_options` picks how
      many to draw (without replacement) from ``restricted_negative_list`` or all classes; drawn positives are
      discarded. Negatives are then kept in random order while ``max_seq_length - positive_caption_length`` minus
      their ``"name. "`` token counts stays > 0. Positives and negatives are shuffled together.

    The background entry (label 0, if present) is never sampled as a negative (the reference could draw it).
    Returns like :func:`convert_od_to_grounding_simple`.
    """
    rng = rng or random
    candidates = [k for k in (restricted_negative_list if restricted_negative_list is not None else ind_to_class)
                  if k != 0 and ind_to_class.get(k) != "__background__"]
    if disable_shuffle:
        label_list = sorted(candidates)
        num_pos_in_caption = num_neg_in_caption = len(label_list)
    else:
        positive = list(dict.fromkeys(int(label) for label in labels))
        full_positive = len(positive)
        if max_num_labels <= 0:
            full_negative = random_sample_negative
        else:
            full_negative = max(min(max_num_labels - full_positive, random_sample_negative), 0)
        full_negative = min(full_negative, len(candidates))
        num_negatives, _ = generate_control_options(control_probabilities, full_positive, full_negative, rng)
        negative = []
        if num_negatives != -1:
            num_negatives = min(max(num_negatives, 0), len(candidates))
            positive_set = set(positive)
            negative = [k for k in rng.sample(candidates, num_negatives) if k not in positive_set]
        rng.shuffle(positive)
        rng.shuffle(negative)
        budget = max_seq_length - positive_caption_length
        screened = []
        for label in negative:
            budget -= _num_tokens(tokenizer, label, ind_to_class)
            if budget <= 0:
                break
            screened.append(label)
        label_list = screened + positive
        rng.shuffle(label_list)
        num_pos_in_caption, num_neg_in_caption = len(positive), len(screened)
    prefix = ""
    if add_detection_prompt:
        one_kind = not disable_shuffle and (num_pos_in_caption == 0 or num_neg_in_caption == 0)
        prefix = DETECTION_QUERY_PROMPT if add_detection_prompt_advanced and one_kind else DETECTION_PROMPT
    label_to_positions, caption = _caption_from_labels(label_list, ind_to_class, separation_tokens, prefix)
    tokens_positive, greenlight = _spans_for_boxes([int(x) for x in labels], label_to_positions)
    return tokens_positive, caption, greenlight, label_to_positions
