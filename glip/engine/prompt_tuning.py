"""Prompt tuning: the frozen language backbone's output is computed once per prompt and cached.

In ``language_prompt_v2`` / ``v4`` (and ``linear_prob``) BERT is frozen and in eval mode, so its output for a
caption never changes; only the prompt offset ``rpn.tunable_linear`` (1000 x 768, added to the first L text
positions) and what the mode names learn. :class:`CachedLanguageBackbone` replaces ``model.language_backbone``:
the first time it sees a tokenised caption it runs BERT, afterwards it returns the stored features, so a
fine-tuning step costs no text encoding. The state-dict keys stay ``language_backbone.body.model.*`` (the
wrapped encoder is kept as ``.body``), so checkpoints are unchanged.

:func:`save_prompt` writes the tuned prompt (captions, their cached text features and the offset) to a small
file; :func:`load_prompt` installs it in a model, which then detects with those captions without any language
backbone (``body`` may be dropped: ``drop_language_backbone=True``).
"""
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from glip.engine.ema import unwrap_model

logger = logging.getLogger(__name__)

PROMPT_FORMAT = "glip-tuned-prompt-1"
_PER_SAMPLE_KEYS = ("hidden", "masks", "embedded", "aggregate")


def _row_key(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
    return tuple(input_ids.tolist()), tuple(attention_mask.tolist())


class CachedLanguageBackbone(nn.Module):
    """``forward(input_ids (B, L), attention_mask (B, L))`` -> the language dict, each caption encoded once.

    Args:
        body: the frozen text encoder (``LanguageBackbone.body``), or None for an inference-only prompt model
            (then every caption must have been stored with :meth:`store`).
        max_entries: cached captions kept (least recently used dropped); each holds two (L, 768) tensors.
    """

    def __init__(self, body: Optional[nn.Module], max_entries: int = 128):
        super().__init__()
        self.body = body
        self.freeze = True
        self.max_entries = max_entries
        self._cache: "OrderedDict[tuple, Dict[str, torch.Tensor]]" = OrderedDict()
        self.hits = 0
        self.misses = 0
        if body is not None:
            for p in body.parameters():
                p.requires_grad = False
            body.eval()

    def train(self, mode: bool = True):
        """Always eval: the cache is only valid for a deterministic (frozen, dropout-free) encoder."""
        return super().train(False)

    def __len__(self) -> int:
        return len(self._cache)

    def store(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, language: dict):
        """Cache the per-sample rows of ``language`` (a batch dict) under each row's tokens."""
        for i in range(input_ids.shape[0]):
            key = _row_key(input_ids[i], attention_mask[i])
            self._cache[key] = {k: language[k][i].detach() for k in _PER_SAMPLE_KEYS}
            self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        keys = [_row_key(input_ids[i], attention_mask[i]) for i in range(input_ids.shape[0])]
        todo, seen = [], set()
        for i, key in enumerate(keys):
            if key not in self._cache and key not in seen:
                todo.append(i)
                seen.add(key)
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            if self.body is None:
                raise KeyError("caption not in the tuned prompt and no language backbone to encode it; use one of "
                               "the prompt's captions (see load_prompt) or keep the language backbone")
            idx = torch.tensor(todo, device=input_ids.device)
            with torch.no_grad():
                fresh = self.body(input_ids[idx], attention_mask[idx])
            self.store(input_ids[idx], attention_mask[idx], fresh)
        rows = []
        for key in keys:
            self._cache.move_to_end(key)
            rows.append(self._cache[key])
        return {k: torch.stack([r[k] for r in rows]).to(input_ids.device) for k in _PER_SAMPLE_KEYS}


def install_language_cache(model: nn.Module, max_entries: int = 128) -> CachedLanguageBackbone:
    """Replace ``model.language_backbone`` (frozen) by a :class:`CachedLanguageBackbone` around its encoder."""
    model = unwrap_model(model)
    current = model.language_backbone
    if isinstance(current, CachedLanguageBackbone):
        return current
    if any(p.requires_grad for p in current.parameters()):
        raise ValueError("the language backbone trains in this mode; its output cannot be cached "
                         "(caching needs MODEL.LANGUAGE_BACKBONE.FREEZE True)")
    cached = CachedLanguageBackbone(current.body, max_entries=max_entries)
    model.language_backbone = cached
    logger.info("Language features are cached per prompt (frozen language backbone)")
    return cached


def _ensure_offset(model: nn.Module, weight: torch.Tensor):
    rpn = model.rpn
    if getattr(rpn, "tunable_linear", None) is None:
        rpn.tunable_linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        rpn.tunable_linear.weight.copy_(weight)
    rpn.tunable_linear.weight.requires_grad = False


def save_prompt(model: nn.Module, path: str, captions: Sequence[str]) -> dict:
    """Write the tuned prompt for ``captions`` to ``path``: their text features and ``rpn.tunable_linear``.

    The features come from the model's own (frozen) language backbone; returns the saved dict.
    """
    model = unwrap_model(model)
    device = next(model.parameters()).device
    tokens = model.tokenize(list(captions), device)
    with torch.no_grad():
        language = model.language_backbone(tokens["input_ids"], tokens["attention_mask"])
    offset = getattr(model.rpn, "tunable_linear", None)
    data = {
        "format": PROMPT_FORMAT,
        "captions": list(captions),
        "input_ids": tokens["input_ids"].cpu(),
        "attention_mask": tokens["attention_mask"].cpu(),
        "language": {k: language[k].detach().cpu() for k in _PER_SAMPLE_KEYS},
        "tunable_linear": None if offset is None else offset.weight.detach().cpu().clone(),
    }
    torch.save(data, path)
    logger.info("Saved the tuned prompt of %d caption(s) to %s", len(captions), path)
    return data


def load_prompt(model: nn.Module, path: str, drop_language_backbone: bool = True) -> List[str]:
    """Install the prompt of ``path`` (see :func:`save_prompt`) in ``model``; returns its captions.

    ``model.rpn.tunable_linear`` gets the tuned offset (created if the model has none) and the captions' text
    features are served from the cache; with ``drop_language_backbone`` the BERT encoder is removed, so only
    these captions can be used.
    """
    model = unwrap_model(model)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != PROMPT_FORMAT:
        raise ValueError("{} is not a tuned-prompt file (format {!r})".format(path, data.get("format")))
    device = next(model.parameters()).device
    if data["tunable_linear"] is not None:
        _ensure_offset(model, data["tunable_linear"].to(device))
    current = model.language_backbone
    body = None if drop_language_backbone else getattr(current, "body", None)
    cached = CachedLanguageBackbone(body)
    cached.store(data["input_ids"].to(device), data["attention_mask"].to(device),
                 {k: v.to(device) for k, v in data["language"].items()})
    model.language_backbone = cached
    if hasattr(model, "freeze_language_backbone"):
        model.freeze_language_backbone = True
    return list(data["captions"])
