"""Up-front checks of a COCO-format fine-tuning task, with errors that say how to fix it.

GLIP detects by grounding: the caption is the category names joined by ``DATASETS.SEPARATION_TOKENS``, and BERT
sees at most ``MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`` (256) tokens. A task whose json has no categories, whose
boxes use category ids the categories do not list, or whose caption would be longer than the limit (the model
would silently truncate it, so the last classes could never be learnt) is rejected before any training.
"""
import json
import logging
from typing import List, Optional

from glip.utils.errors import DataError

logger = logging.getLogger(__name__)

CHUNKING_REMEDY = (
    "Remedy (chunking): split the categories into groups whose prompt fits (glip.engine.chunking.chunk_categories "
    "gives the split), fine-tune one task config per group (DATASETS.OVERRIDE_CATEGORY / a json per group), and "
    "evaluate the full category list with TEST.CHUNKED_EVALUATION <categories per prompt>.")


class TaskConfigError(DataError, ValueError):
    """The fine-tuning task cannot be trained as configured; the message names the fix."""


def caption_names(cfg, categories: List[dict]) -> List[str]:
    """The category names the training caption lists (override names when USE_OVERRIDE_CATEGORY)."""
    cats = categories
    d = cfg.DATASETS
    if d.OVERRIDE_CATEGORY and d.USE_OVERRIDE_CATEGORY:
        override = d.OVERRIDE_CATEGORY
        cats = json.loads(override) if isinstance(override, str) else list(override)
    names = [c["name"] for c in sorted(cats, key=lambda c: c["id"]) if c.get("name") != "__background__"]
    if d.USE_CAPTION_PROMPT and d.CAPTION_PROMPT:
        prompts = json.loads(d.CAPTION_PROMPT) if isinstance(d.CAPTION_PROMPT, str) else d.CAPTION_PROMPT
        names = [p.get("prefix", "") + p.get("name", n) + p.get("suffix", "") for p, n in zip(prompts, names)]
    return names


def caption_token_count(names: List[str], separator: str, tokenizer) -> int:
    """Tokens of the detection caption of ``names`` ([CLS] and [SEP] included)."""
    return len(tokenizer(separator.join(names))["input_ids"])


def check_coco_task(coco: dict, cfg, tokenizer, source: str = "annotations") -> List[str]:
    """Raise :class:`TaskConfigError` when ``coco`` (a COCO dict) cannot be fine-tuned with ``cfg``.

    Returns the caption's category names.
    """
    categories = coco.get("categories") or []
    if not categories:
        raise TaskConfigError(
            "{} has no 'categories': GLIP needs the class names to build its text prompt. Add "
            "\"categories\": [{{\"id\": 1, \"name\": \"<class name>\"}}, ...] to the json (ids as used by "
            "the annotations' category_id).".format(source))
    known = {c["id"] for c in categories}
    used = {a["category_id"] for a in coco.get("annotations", [])}
    missing = sorted(used - known)
    if missing:
        raise TaskConfigError(
            "{}: annotations use category ids {} that are missing from 'categories' (listed: {}). Add them to "
            "'categories' with their names.".format(source, missing, sorted(known)))
    names = caption_names(cfg, categories)
    max_len = cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN
    count = caption_token_count(names, cfg.DATASETS.SEPARATION_TOKENS, tokenizer)
    if count > max_len:
        raise TaskConfigError(
            "{}: the caption of its {} categories needs {} tokens, more than MODEL.LANGUAGE_BACKBONE."
            "MAX_QUERY_LEN = {}; the classes past the limit could never be detected. {}".format(
                source, len(names), count, max_len, CHUNKING_REMEDY))
    return names


def check_registered_tasks(cfg, tokenizer=None, names: Optional[List[str]] = None) -> int:
    """Check every ``DATASETS.TRAIN`` entry registered through ``DATASETS.REGISTER`` with an ``ann_file``.

    Datasets from the built-in catalog (COCO, Objects365, ...) are not checked. Returns how many were checked.
    """
    from glip.config.paths_catalog import try_to_find
    from glip.data.positive_map import load_tokenizer

    register = cfg.DATASETS.REGISTER
    checked = 0
    for name in (names if names is not None else cfg.DATASETS.TRAIN):
        entry = register.get(name) if register else None
        if not entry or "ann_file" not in entry:
            continue
        path = try_to_find(entry["ann_file"])
        with open(path) as f:
            coco = json.load(f)
        if tokenizer is None:
            tokenizer = load_tokenizer(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
        check_coco_task(coco, cfg, tokenizer, source="dataset {!r} ({})".format(name, path))
        checked += 1
    return checked
