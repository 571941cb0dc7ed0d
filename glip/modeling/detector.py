"""`GeneralizedVLRCNN`: GLIP's detector (visual backbone + language backbone + VLDyHead module).

Forward signature and outputs are the reference's: `model(images, targets=None, captions=None,
positive_map=None)` returns the loss dict in training and a list of BoxLists (fields `scores`, `labels`) in eval.
`forward` reads as the pipeline: `preprocess` -> `encode_text` -> `backbone` -> `rpn` (the head) ->
`forward_training` (losses) or `forward_inference` (detections).
"""
import logging
from typing import Dict, List, Optional

import torch
from torch import nn

from glip.layers.cpu_gemm import route_linear_layers
from glip.modeling.freezing import FreezePolicy, apply_freeze_policy, keep_frozen_in_eval, policy_from_config
from glip.structures.image_list import to_image_list

logger = logging.getLogger(__name__)


class GeneralizedVLRCNN(nn.Module):
    """Image + caption -> boxes scored against the caption's tokens.

    Args:
        backbone: images (B, 3, H, W) -> 5 FPN levels.
        language_backbone: (input_ids, attention_mask) -> language dict.
        tokenizer: a HuggingFace tokenizer (bert-base-uncased WordPiece).
        rpn: the `VLDyHeadModule`.
        max_query_len: text length (256); captions are padded to it when `pad_max`.
        freeze_policy: which parameters train and which parts stay in eval mode whatever `train()` says
            (`glip.modeling.freezing`; default: everything trains except the unused `rpn.head.cls_logits`).
        one_hot_classes: DATASETS.ONE_HOT: the text mask keeps exactly the first N positions.
        mask_special: MASK_SPECIAL: special tokens are masked out of the text.
        parallel_text: GLIPKNOW.PARALLEL_LANGUAGE_INPUT: encodes captions that are lists of class texts, one text
            position per class (`glip.modeling.language.parallel`).
        token_masker: MLM_LOSS: a `glip.modeling.language.mlm_masking.TokenMasker`; in training it masks caption
            tokens before the language backbone and gives the `mlm_labels` of the MLM loss. The reference masks
            in eval mode too (its evaluation commands switch MLM_LOSS off); here eval never masks.
        text_cache: LANGUAGE_BACKBONE.CACHE_FROZEN: a `glip.modeling.language.frozen_cache.FrozenTextCache` that
            the frozen language backbone's outputs go through (each distinct caption encoded once).
    """

    def __init__(self, backbone: nn.Module, language_backbone: nn.Module, tokenizer, rpn: nn.Module,
                 max_query_len: int = 256, pad_max: bool = True, freeze_policy: Optional[FreezePolicy] = None,
                 one_hot_classes: int = 0, mask_special: bool = False, parallel_text=None, token_masker=None,
                 text_cache=None):
        super().__init__()
        self.backbone = backbone
        self.language_backbone = language_backbone
        self.tokenizer = tokenizer
        self.rpn = rpn
        self.max_query_len = max_query_len
        self.pad_max = pad_max
        self.one_hot_classes = one_hot_classes
        self.mask_special = mask_special
        self.parallel_text = parallel_text
        self.token_masker = token_masker
        self.text_cache = text_cache
        self.set_freeze_policy(FreezePolicy() if freeze_policy is None else freeze_policy)

    @property
    def freeze_language_backbone(self) -> bool:
        """The language backbone is frozen: `encode_text` runs it without gradients."""
        return self.freeze_policy.freeze_language

    def set_freeze_policy(self, policy: FreezePolicy) -> List[str]:
        """Adopt `policy`: `requires_grad` of every parameter now, frozen parts in eval mode at every `train()`.

        Returns the names of the trainable parameters.
        """
        self.freeze_policy = policy
        apply_freeze_policy(self, policy)
        self.train(self.training)  # frozen parts to eval; Swin re-freezes its FREEZE_CONV_BODY_AT stages
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        """Train mode that keeps the policy's frozen parts in eval mode (their normalisation and dropout fixed)."""
        super().train(mode)
        keep_frozen_in_eval(self, self.freeze_policy)
        return self

    def tokenize(self, captions: List[str], device) -> dict:
        """Captions -> `input_ids`, `attention_mask`, `special_tokens_mask`, each (B, T) on `device`."""
        if isinstance(captions, str):
            raise TypeError("captions must be a list of strings, one per image, not a single string")
        tokens = self.tokenizer(list(captions), max_length=self.max_query_len,
                                padding="max_length" if self.pad_max else "longest",
                                return_special_tokens_mask=True, return_tensors="pt", truncation=True)
        return {k: v.to(device) for k, v in tokens.items()}

    def encode_text(self, captions: List[str], device, greenlight_map: Optional[torch.Tensor] = None) -> dict:
        """Tokenize (masking tokens for the MLM loss in training) and run the language backbone.

        Returns the language dict: `hidden` (B, T, D) last-layer states, `embedded` (B, T, D) masked features,
        `aggregate` (B, D), `masks` (B, T) the text mask the head uses (see `one_hot_classes`, `mask_special`),
        `mlm_labels` (B, T) the masked-language-model labels (-100 ignored), or None outside MLM training.
        `greenlight_map` (B, 256): which tokens may be masked / count in the MLM loss (see `token_masker`).
        """
        if self.parallel_text is not None:
            return self.parallel_text(self, captions, device)
        tokens = self.tokenize(captions, device)
        input_ids, mlm_labels = tokens["input_ids"], None
        if self.token_masker is not None and self.training:
            input_ids, mlm_labels = self.token_masker(input_ids, greenlight_map)
        if self.freeze_language_backbone:
            with torch.no_grad():
                if self.text_cache is not None:
                    language = self.text_cache(self.language_backbone, input_ids, tokens["attention_mask"])
                else:
                    language = self.language_backbone(input_ids, tokens["attention_mask"])
        else:
            language = self.language_backbone(input_ids, tokens["attention_mask"])
        language = dict(language)
        language["masks"] = self._text_mask(language["masks"], tokens["special_tokens_mask"])
        language["mlm_labels"] = mlm_labels
        return language

    def _text_mask(self, attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor) -> torch.Tensor:
        """The (B, T) mask of the tokens regions are scored against: the attention mask, or the first
        `one_hot_classes` positions (DATASETS.ONE_HOT), or every non-special token (MASK_SPECIAL)."""
        masks = attention_mask
        if self.one_hot_classes:
            masks = torch.zeros_like(masks)
            masks[:, : self.one_hot_classes] = 1
        if self.mask_special:
            masks = 1 - special_tokens_mask
        return masks

    def forward(self, images, targets: Optional[list] = None, captions: Optional[List[str]] = None,
                positive_map=None, greenlight_map: Optional[torch.Tensor] = None):
        """Text encoding -> backbone -> head -> losses (training) or detections (eval).

        Args:
            images: an ImageList, a (B, 3, H, W) tensor or a list of (3, H, W) tensors.
            targets: training only: per image a BoxList (xyxy) with a "labels" field.
            captions: one caption per image.
            positive_map: the reference's name for two things (glip/data/positive_map.py): in training the
                batch's token targets, a binary (sum of boxes, T) tensor whose row j marks the caption tokens of
                the batch's box j (images in order); in eval the prompt's {label: [token indices]}.
            greenlight_map: MLM training: (B, 256) tokens that may be masked (the collator's stack of the targets'
                `greenlight_map` fields; taken from the targets when not given).

        Returns the loss dict in training, per image a BoxList (fields `scores`, `labels`) in eval.
        """
        images, targets = self.preprocess(images, targets, captions)
        if greenlight_map is None and self.token_masker is not None and self.training:
            greenlight_map = _stacked_field(targets, "greenlight_map")
        language = self.encode_text(captions, images.tensors.device, greenlight_map)
        features = self.backbone(images.tensors)
        head_outputs = self.rpn(images, features, language)
        if self.training:
            return self.forward_training(head_outputs, targets, positive_map, language, captions)
        return self.forward_inference(head_outputs, positive_map)

    def preprocess(self, images, targets: Optional[list], captions: Optional[List[str]]):
        """Check the inputs; `(ImageList, targets on the images' device)`."""
        if self.training and targets is None:
            raise ValueError("in training mode, targets must be given")
        if captions is None:
            raise ValueError("GLIP needs one caption per image (captions=None given)")
        images = to_image_list(images)
        if len(captions) != images.tensors.shape[0]:
            raise ValueError(f"got {len(captions)} captions for a batch of {images.tensors.shape[0]} images")
        if targets:
            targets = [t.to(images.tensors.device) for t in targets if t is not None]
        return images, targets

    def forward_training(self, head_outputs: dict, targets: list, token_targets: Optional[torch.Tensor],
                         language: dict, captions: List[str]) -> Dict[str, torch.Tensor]:
        """The weighted loss dict; `token_targets` is the (sum of boxes, T) binary map of the batch's boxes."""
        return self.rpn.losses(head_outputs, targets, token_targets, text_masks=language.get("masks"),
                               mlm_labels=language.get("mlm_labels"), captions=captions)

    def forward_inference(self, head_outputs: dict, label_to_tokens: Optional[dict]) -> list:
        """Per image a BoxList of detections; `label_to_tokens` is the prompt's {label: [token indices]}."""
        return self.rpn.detect(head_outputs, label_to_tokens)


def _stacked_field(targets: Optional[list], name: str) -> Optional[torch.Tensor]:
    """The targets' `name` fields stacked (B, ...), or None unless every target has one."""
    if not targets or not all(t.has_field(name) for t in targets):
        return None
    return torch.stack([t.get_field(name) for t in targets], dim=0)


def build_detection_model(cfg) -> GeneralizedVLRCNN:
    """Build GLIP from a config (MODEL.META_ARCHITECTURE GeneralizedVLRCNN)."""
    from glip.modeling.backbone import build_backbone
    from glip.modeling.head.build import build_rpn
    from glip.modeling.language import build_language_backbone, build_tokenizer
    from glip.modeling.language.parallel import build_parallel_text_encoder
    from glip.modeling.language.frozen_cache import FrozenTextCache
    from glip.modeling.language.mlm_masking import TokenMasker

    from glip.config.audit import check_config

    check_config(cfg)  # the option audit also on the Python API path: a refused option is named before any work
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch != "GeneralizedVLRCNN":
        raise ValueError(f"MODEL.META_ARCHITECTURE {arch!r} is not supported (only 'GeneralizedVLRCNN')")
    freeze_policy = policy_from_config(cfg)  # first: refuses MODEL.LINEAR_PROB without a frozen backbone and FPN
    backbone = build_backbone(cfg)
    language_backbone = build_language_backbone(cfg)  # before the head: its BertConfig sizes the head's text layers
    tokenizer = build_tokenizer(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    fuse, lang = cfg.MODEL.DYHEAD.FUSE_CONFIG, cfg.MODEL.LANGUAGE_BACKBONE
    model = GeneralizedVLRCNN(
        backbone=backbone,
        language_backbone=language_backbone,
        tokenizer=tokenizer,
        rpn=build_rpn(cfg, language_backbone.config),
        max_query_len=cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN,
        pad_max=cfg.MODEL.LANGUAGE_BACKBONE.PAD_MAX,
        freeze_policy=freeze_policy,
        one_hot_classes=cfg.MODEL.DYHEAD.NUM_CLASSES if cfg.DATASETS.ONE_HOT else 0,
        mask_special=cfg.MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL,
        parallel_text=build_parallel_text_encoder(cfg),
        token_masker=TokenMasker(tokenizer, only_positives=fuse.MLM_LOSS_FOR_ONLY_POSITIVES) if fuse.MLM_LOSS else None,
        text_cache=FrozenTextCache(lang.CACHE_FROZEN) if lang.CACHE_FROZEN else None,
    )
    route_linear_layers(model)  # fp32 CPU products through oneDNN (glip.layers.cpu_gemm), same values up to rounding
    return model


__all__ = ["GeneralizedVLRCNN", "build_detection_model"]
