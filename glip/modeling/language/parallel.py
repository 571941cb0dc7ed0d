"""Parallel language input (GLIPKNOW.PARALLEL_LANGUAGE_INPUT): one text per class, one text position per class.

The prompt of an image is a list of class texts (`glip.data.knowledge.knowledge_prompts`). The texts plus an
empty one (the "no object" slot the reference appends) are tokenized as one batch (padded to the longest) and run
through the language backbone; each text is reduced to one vector (GLIPKNOW.LAN_FEATURE_AGG_TYPE: "first", its
[CLS] position, or "mean", the mean over its valid tokens), for both `hidden` and `embedded`. The language dict
of every image is then `(C + 1, D)`: position i is class i, the last position (the empty text) is masked out.
Inference only: the reference trains this mode with per-batch class sampling (MAX_NUM_CLASSES_PER_BATCH_TRAIN),
which is not implemented here.
"""
from typing import List, Sequence

import torch

AGGREGATIONS = ("first", "mean")


class ParallelTextEncoder:
    """Encodes per-class texts into one position each (see the module docstring).

    Args:
        aggregation: GLIPKNOW.LAN_FEATURE_AGG_TYPE, "first" or "mean".
    """

    def __init__(self, aggregation: str = "first"):
        if aggregation not in AGGREGATIONS:
            raise ValueError("GLIPKNOW.LAN_FEATURE_AGG_TYPE must be one of {}, got {!r}".format(
                AGGREGATIONS, aggregation))
        self.aggregation = aggregation

    def aggregate(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, D) per-token features and (N, L) mask -> (N, D) one vector per text."""
        if self.aggregation == "first":
            return features[:, 0, :]
        mask = mask[:, : features.shape[1]]
        lengths = mask.sum(-1).unsqueeze(-1).float()
        return (features * mask.unsqueeze(-1).float()).sum(1) / lengths

    def __call__(self, model, captions: Sequence[Sequence[str]], device) -> dict:
        """The language dict of a batch whose captions are all the same list of C class texts:
        `hidden`, `embedded` (B, C + 1, D), `masks` (B, C + 1) (last position 0), `aggregate` and `mlm_labels`
        None. `model` is the detector (its tokenizer, language backbone and MAX_QUERY_LEN)."""
        if model.training:
            raise RuntimeError("GLIPKNOW.PARALLEL_LANGUAGE_INPUT: training with parallel class texts is not "
                               "implemented (inference only)")
        texts = _shared_texts(captions)
        tokens = model.tokenizer(texts + [""], max_length=model.max_query_len, padding="longest",
                                 return_special_tokens_mask=True, return_tensors="pt", truncation=True)
        ids, attention = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not model.freeze_language_backbone):
            language = model.language_backbone(ids, attention)
        hidden = self.aggregate(language["hidden"], language["masks"])
        embedded = self.aggregate(language["embedded"], language["masks"])
        batch = len(captions)
        masks = torch.ones((batch, len(texts) + 1), dtype=language["masks"].dtype, device=device)
        masks[:, -1] = 0
        return {"hidden": hidden.unsqueeze(0).repeat(batch, 1, 1),
                "embedded": embedded.unsqueeze(0).repeat(batch, 1, 1),
                "masks": masks, "aggregate": None, "mlm_labels": None}


def _shared_texts(captions: Sequence[Sequence[str]]) -> List[str]:
    if not captions or isinstance(captions[0], str):
        raise TypeError("GLIPKNOW.PARALLEL_LANGUAGE_INPUT: each caption must be a list of class texts")
    texts = [str(t) for t in captions[0]]
    if any([str(t) for t in c] != texts for c in captions[1:]):
        raise ValueError("GLIPKNOW.PARALLEL_LANGUAGE_INPUT: all images of a batch must share their class texts")
    return texts


def build_parallel_text_encoder(cfg):
    """The encoder when GLIPKNOW.PARALLEL_LANGUAGE_INPUT is on, else None; refuses, as the reference asserts,
    the options it cannot combine with (MLM_LOSS, DATASETS.ONE_HOT, MASK_SPECIAL)."""
    if not cfg.GLIPKNOW.PARALLEL_LANGUAGE_INPUT:
        return None
    for key, value in (("MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS", cfg.MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS),
                       ("DATASETS.ONE_HOT", cfg.DATASETS.ONE_HOT),
                       ("MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL", cfg.MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL)):
        if value:
            raise ValueError("GLIPKNOW.PARALLEL_LANGUAGE_INPUT cannot be combined with {} True".format(key))
    return ParallelTextEncoder(cfg.GLIPKNOW.LAN_FEATURE_AGG_TYPE)
