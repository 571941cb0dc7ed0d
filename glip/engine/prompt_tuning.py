"""Prompt tuning: the frozen language backbone's output is computed once per prompt and cached.

In ``language_prompt_v2`` / ``v4`` (and ``linear_prob``) BERT is frozen and in eval mode (the freeze policy,
``glip.modeling.freezing``), so its output for a caption never changes; only the prompt offset
``rpn.tunable_linear`` (1000 x 768, added to the first L text positions) and what the mode names learn.

Two explicit transformations of a detector live here:

* :func:`cache_language_backbone` (called by ``glip.engine.finetune.prepare_model``) replaces
  ``model.language_backbone`` by a :class:`CachedLanguageBackbone` around the same encoder: the first time it
  sees a tokenised caption it runs BERT, afterwards it returns the stored features, so a fine-tuning step
  costs no text encoding. The state-dict keys stay ``language_backbone.body.model.*`` (the wrapped encoder is
  kept as ``.body``), so checkpoints are unchanged.
* :func:`load_prompt` installs a tuned prompt written by :func:`save_prompt` (captions, their cached text
  features and the offset): the offset goes into ``rpn.tunable_linear`` (``VLDyHeadModule.add_prompt_offset``),
  the features into a cache, and the model's freeze policy gets a frozen language backbone and offset; the
  model then detects with those captions without any language backbone (``drop_language_backbone=True``).
"""
import logging
from collections import OrderedDict
from dataclasses import replace
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
        self.max_entries = max_entries
        self._cache: "OrderedDict[tuple, Dict[str, torch.Tensor]]" = OrderedDict()
        self.hits = 0
        self.misses = 0

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
            if self.body.training:
                raise RuntimeError("cached text features need the encoder in eval mode (a frozen language "
                                   "backbone: MODEL.LANGUAGE_BACKBONE.FREEZE)")
            idx = torch.tensor(todo, device=input_ids.device)
            with torch.no_grad():
                fresh = self.body(input_ids[idx], attention_mask[idx])
            self.store(input_ids[idx], attention_mask[idx], fresh)
        rows = []
        for key in keys:
            self._cache.move_to_end(key)
            rows.append(self._cache[key])
        return {k: torch.stack([r[k] for r in rows]).to(input_ids.device) for k in _PER_SAMPLE_KEYS}


def cache_language_backbone(model: nn.Module, max_entries: int = 128) -> nn.Module:
    """Prompt-tuning transformation: ``model``'s frozen language backbone becomes a :class:`CachedLanguageBackbone`.

    ``model`` (a detector, DDP-wrapped or not) is changed in place and returned. Its freeze policy must freeze
    the language backbone (``MODEL.LANGUAGE_BACKBONE.FREEZE``): the detector's ``train()`` then keeps the
    cache's encoder in eval mode, so each caption's features are fixed. Idempotent.
    """
    detector = unwrap_model(model)
    current = detector.language_backbone
    if isinstance(current, CachedLanguageBackbone):
        return model
    if not detector.freeze_policy.freeze_language:
        raise ValueError("the language backbone trains in this mode; its output cannot be cached "
                         "(caching needs MODEL.LANGUAGE_BACKBONE.FREEZE True)")
    detector.language_backbone = CachedLanguageBackbone(current.body, max_entries=max_entries)
    detector.train(detector.training)  # the frozen language backbone (now the cache) in eval mode
    logger.info("Language features are cached per prompt (frozen language backbone)")
    return model


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
    """Install the prompt of ``path`` (see :func:`save_prompt`) in ``model`` (changed in place); returns its captions.

    ``model.rpn.tunable_linear`` gets the tuned offset (created if the model has none) and the captions' text
    features are served from a cache; the model's freeze policy then freezes the language backbone and the
    offset (a loaded prompt is fixed). With ``drop_language_backbone`` the BERT encoder is removed, so only
    these captions can be used.
    """
    detector = unwrap_model(model)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != PROMPT_FORMAT:
        raise ValueError("{} is not a tuned-prompt file (format {!r})".format(path, data.get("format")))
    device = next(detector.parameters()).device
    if data["tunable_linear"] is not None:
        detector.rpn.add_prompt_offset(data["tunable_linear"].to(device))
    body = None if drop_language_backbone else getattr(detector.language_backbone, "body", None)
    cached = CachedLanguageBackbone(body)
    cached.store(data["input_ids"].to(device), data["attention_mask"].to(device),
                 {k: v.to(device) for k, v in data["language"].items()})
    detector.language_backbone = cached
    policy = detector.freeze_policy
    detector.set_freeze_policy(replace(policy, freeze_language=True, freeze_offset=True,
                                       add_linear_layer=policy.add_linear_layer or data["tunable_linear"] is not None))
    return list(data["captions"])
