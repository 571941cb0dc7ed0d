"""Captions from class names and the maps between boxes/labels and caption tokens.

One module shared by the data pipeline (training targets) and the model's inference path (detection prompts).

Terms (as in GLIP):
* ``tokens_positive``: per box (or label) a list of character spans ``[(beg, end), ...]`` in the caption.

The reference calls three different things ``positive_map``; the model code gives each its own name:

1. The target field ``"positive_map"`` of one training sample's BoxList (name kept: datasets, the collator and
   users read it): ``(num_boxes, 256)`` float, row ``i`` marks every token any span of box ``i`` covers,
   row-normalised (``row / (row.sum() + 1e-6)``) as :func:`create_positive_map` builds it.
2. ``token_targets`` (the model's training input, passed as ``model(..., positive_map=...)`` and returned by the
   collator as ``positive_map``): the batch's field-1 maps concatenated over images in order and made binary
   (nonzero -> 1, as :func:`binarize_positive_map`), ``(sum of boxes in the batch, 256)`` float; the ATSS loss
   gives every positive anchor its matched box's row.
3. ``label_to_tokens`` (the model's evaluation input, passed as ``model(..., positive_map=...)``; the
   reference's ``positive_map_label_to_token``): a prompt's ``{label: [token indices]}`` dict, made by
   :func:`create_queries_and_maps` (detection prompts) or
   :func:`create_positive_map_label_to_token_from_positive_map` (from the rows of a field-1 map, grounding);
   post-processing averages the label's token scores into its class score.

A span ``[beg, end)`` covers the tokens ``char_to_token(beg) .. char_to_token(end - 1)``. When a boundary character
maps to no token (a space, or a character the tokenizer dropped) the reference retries ``beg + 1`` then ``beg + 2``
(and ``end - 2`` then ``end - 3``); a span still unresolved is skipped silently.
"""
import logging
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

MAX_QUERY_LEN = 256

Span = Tuple[int, int]


def clean_name(name: str) -> str:
    """The reference's class-name cleaning: drop ``(...)``, ``_`` -> space, one double space -> single."""
    name = re.sub(r"\(.*\)", "", name)
    name = re.sub(r"_", " ", name)
    name = re.sub(r"  ", " ", name)
    return name


def load_tokenizer(name_or_path: Optional[str] = None):
    """The tokenizer of ``name_or_path`` (default ``bert-base-uncased``, found offline through the local HF cache or
    the shipped vocab): :func:`glip.text.build_tokenizer`."""
    from glip.text import build_tokenizer

    return build_tokenizer(name_or_path or "bert-base-uncased")


def build_caption(
    names: Sequence[str],
    separation_tokens: str = ". ",
    caption_prompt: Optional[Sequence[dict]] = None,
    prefix: str = "",
    clean: bool = True,
) -> Tuple[str, List[Span]]:
    """Join class names into a detection caption; returns ``(caption, spans)`` with one ``(beg, end)`` per name.

    ``caption_prompt[i]`` (``{"prefix", "name", "suffix"}``) replaces name ``i`` by ``prefix + name + suffix`` with
    the span on ``name`` only. The separator goes between items, never after the last one. ``prefix`` starts the
    caption (e.g. ``"object detection : "``). Names are ``clean_name``-ed when ``clean`` (the training-side
    conversion cleans the prompt name too; the evaluation side does not — pass ``clean=False`` there).
    """
    caption = prefix
    spans: List[Span] = []
    for index, name in enumerate(names):
        if caption_prompt is not None:
            caption += caption_prompt[index].get("prefix", "")
            name = caption_prompt[index]["name"]
        beg = len(caption)
        caption += clean_name(name) if clean else name
        spans.append((beg, len(caption)))
        if caption_prompt is not None:
            caption += caption_prompt[index].get("suffix", "")
        if index != len(names) - 1:
            caption += separation_tokens
    return caption, spans


def _char_to_token(tokenized, char_index: int) -> Optional[int]:
    try:
        return tokenized.char_to_token(char_index)
    except Exception:  # the fast tokenizer raises for indices past the text
        return None


def span_to_token_range(tokenized, beg: int, end: int) -> Optional[Tuple[int, int]]:
    """Inclusive token range ``(first, last)`` of the character span ``[beg, end)``, or None if unresolved."""
    beg_pos = _char_to_token(tokenized, beg)
    if beg_pos is None:
        beg_pos = _char_to_token(tokenized, beg + 1)
        if beg_pos is None:
            beg_pos = _char_to_token(tokenized, beg + 2)
    end_pos = _char_to_token(tokenized, end - 1)
    if end_pos is None:
        end_pos = _char_to_token(tokenized, end - 2)
        if end_pos is None:
            end_pos = _char_to_token(tokenized, end - 3)
    if beg_pos is None or end_pos is None:
        return None
    return beg_pos, end_pos


def create_positive_map(
    tokenized, tokens_positive: Sequence[Sequence[Span]], max_len: int = MAX_QUERY_LEN, normalize: bool = True
) -> torch.Tensor:
    """``(N, max_len)`` float map: row ``j`` marks the tokens of every span of ``tokens_positive[j]``.

    ``normalize`` (the reference's behaviour) divides each row by ``sum + 1e-6``; rows without resolved spans stay 0.
    """
    positive_map = torch.zeros((len(tokens_positive), max_len), dtype=torch.float)
    for j, spans in enumerate(tokens_positive):
        for beg, end in spans:
            token_range = span_to_token_range(tokenized, beg, end)
            if token_range is None:
                continue
            positive_map[j, token_range[0]: token_range[1] + 1] = 1.0
    if normalize:
        positive_map = positive_map / (positive_map.sum(-1)[:, None] + 1e-6)
    return positive_map


def binarize_positive_map(positive_map: torch.Tensor) -> torch.Tensor:
    """The collator's binary form: nonzero -> 1.0 (``bool().float()``)."""
    return positive_map.bool().float()


def create_positive_map_label_to_token_from_positive_map(positive_map: torch.Tensor, plus: int = 0) -> Dict[int, List[int]]:
    """``{i + plus: nonzero token indices of row i}`` (VLDyHead evaluation uses ``plus=1``)."""
    return {i + plus: torch.nonzero(positive_map[i], as_tuple=True)[0].tolist() for i in range(len(positive_map))}


def create_positive_dict(
    tokenized, tokens_positive: Sequence[Sequence[Span]], labels: Sequence[int]
) -> Tuple[Dict[int, int], Dict[int, List[int]]]:
    """``(token -> label, label -> [tokens])`` for labelled spans; labels whose spans are unresolved are absent."""
    token_to_label: Dict[int, int] = {}
    label_to_token: Dict[int, List[int]] = {}
    for j, spans in enumerate(tokens_positive):
        for beg, end in spans:
            token_range = span_to_token_range(tokenized, beg, end)
            if token_range is None:
                continue
            for token in range(token_range[0], token_range[1] + 1):
                token_to_label[token] = labels[j]
                label_to_token.setdefault(labels[j], []).append(token)
    return token_to_label, label_to_token


def create_queries_and_maps(
    labels: Sequence[int],
    label_list: Sequence[str],
    tokenizer=None,
    separation_tokens: str = ". ",
    caption_prompt: Optional[Sequence[dict]] = None,
    additional_labels: Optional[Sequence[str]] = None,
) -> Tuple[str, Dict[int, List[int]]]:
    """Detection prompt for evaluation: ``(query, {label: [token indices]})``.

    ``label_list[i]`` (cleaned) is the name of ``labels[i]``; with ``caption_prompt`` the raw prompt ``name`` is used
    between its prefix/suffix. ``additional_labels`` (``DATASETS.SUPRESS_QUERY``) are appended after a separator
    and own no label. Tokenization is untruncated, as the reference's evaluation does.
    """
    names = [clean_name(name) for name in label_list]
    query, spans = build_caption(names, separation_tokens, caption_prompt=caption_prompt, clean=False)
    if additional_labels is not None:
        query += separation_tokens + separation_tokens.join(additional_labels)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    tokenized = tokenizer(query, return_tensors="pt")
    _, label_to_token = create_positive_dict(tokenized, [[span] for span in spans], labels=list(labels))
    return query, label_to_token


def create_queries_and_maps_from_categories(
    categories: Dict[int, str], tokenizer=None, chunk_size: int = -1, **kwargs
) -> Tuple[List[str], List[Dict[int, List[int]]]]:
    """Per chunk of sorted labels (``TEST.CHUNKED_EVALUATION``, -1 = one chunk) the query and label->token dict."""
    labels = sorted(categories)
    if chunk_size != -1:
        label_chunks = [labels[i: i + chunk_size] for i in range(0, len(labels), chunk_size)]
    else:
        label_chunks = [labels]
    queries, maps = [], []
    for chunk in label_chunks:
        query, label_to_token = create_queries_and_maps(chunk, [categories[i] for i in chunk], tokenizer, **kwargs)
        queries.append(query)
        maps.append(label_to_token)
    return queries, maps


def create_queries_and_maps_from_dataset(dataset, cfg, tokenizer=None):
    """Evaluation prompts of a detection dataset from the config (the reference's function of the same name).

    Reads ``TEST.CHUNKED_EVALUATION``, ``DATASETS.SEPARATION_TOKENS``, ``DATASETS.CAPTION_PROMPT`` /
    ``USE_CAPTION_PROMPT`` and ``DATASETS.SUPRESS_QUERY`` / ``USE_SUPRESS_QUERY``; ``dataset.categories()`` gives
    ``{label: name}``. Returns ``(queries, label_to_token dicts)``, one per chunk.
    """
    import json

    caption_prompt = cfg.DATASETS.CAPTION_PROMPT
    if isinstance(caption_prompt, str):
        caption_prompt = json.loads(caption_prompt)
    use_prompt = cfg.DATASETS.USE_CAPTION_PROMPT and caption_prompt is not None
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    return create_queries_and_maps_from_categories(
        dataset.categories(), tokenizer, chunk_size=cfg.TEST.CHUNKED_EVALUATION,
        separation_tokens=cfg.DATASETS.SEPARATION_TOKENS, caption_prompt=caption_prompt if use_prompt else None,
        additional_labels=cfg.DATASETS.SUPRESS_QUERY if cfg.DATASETS.USE_SUPRESS_QUERY else None)


def create_greenlight_map(spans: Sequence[Sequence[int]], tokenized, max_len: int = MAX_QUERY_LEN) -> torch.Tensor:
    """``(max_len,)`` float: 1 on tokens inside maskable spans (MLM); any 3-tuple sentinel makes it all -1."""
    greenlight = torch.zeros(max_len, dtype=torch.float)
    for item in spans:
        if len(item) != 2:
            greenlight[:] = -1
            break
        token_range = span_to_token_range(tokenized, item[0], item[1])
        if token_range is not None:
            greenlight[token_range[0]: token_range[1] + 1] = 1.0
    return greenlight


def create_positive_map_for_od_labels(
    tokenized, label_to_positions: Dict[int, Span], max_len: int = MAX_QUERY_LEN
) -> torch.Tensor:
    """``(max_len,)`` float: the detection label owning each token, -1 where none."""
    token_labels = torch.full((max_len,), -1.0)
    for label, (beg, end) in label_to_positions.items():
        token_range = span_to_token_range(tokenized, beg, end)
        if token_range is not None:
            token_labels[token_range[0]: token_range[1] + 1] = float(label)
    return token_labels
