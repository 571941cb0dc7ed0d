"""`VLDyHeadModule`: the dense grounding head of GLIP (the reference's `model.rpn`).

It owns the VLDyHead (`head`), the anchor generator, the ATSS loss and the ATSS post-processor, and turns the
head's outputs into losses (training) or detections (evaluation).
"""
from typing import Dict, List, Optional

import torch
from torch import nn


class VLDyHeadModule(nn.Module):
    """Head + anchors + loss + post-processing.

    Args:
        head: a `VLDyHead`.
        anchor_generator: maps (ImageList, features) to per-image lists of per-level anchor BoxLists.
        loss_evaluator: the ATSS loss (None for an inference-only model).
        box_selector_test: the ATSS post-processor used in eval mode.
        lang_dim: text width, for the optional prompt-tuning offset.
        add_linear_layer: add `tunable_linear` (1000 x lang_dim, zero-initialised), a learned offset added to
            the text features (ADD_LINEAR_LAYER, prompt tuning v2).
        loss_weights: multipliers of the named losses (REG weight is inside the loss evaluator).
        use_classification_loss: report `loss_cls` as is (else 0 x loss, as the reference does).
    """

    def __init__(self, head: nn.Module, anchor_generator: nn.Module, loss_evaluator=None,
                 box_selector_test=None, lang_dim: int = 768, add_linear_layer: bool = False,
                 loss_weights: Optional[Dict[str, float]] = None, use_classification_loss: bool = False,
                 mlm_loss_coef: float = 1.0):
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.loss_evaluator = loss_evaluator
        self.box_selector_test = box_selector_test
        self.loss_weights = dict(loss_weights or {})
        self.use_classification_loss = use_classification_loss
        self.mlm_loss_coef = mlm_loss_coef
        self.tunable_linear = None
        if add_linear_layer:
            self.add_prompt_offset(torch.zeros(1000, lang_dim))

    def add_prompt_offset(self, weight: torch.Tensor) -> nn.Linear:
        """Prompt tuning: the offset `tunable_linear` (created if missing) takes `weight` (1000, lang_dim).

        Its first T rows are added to the (B, T, lang_dim) text features; the state-dict key is
        `rpn.tunable_linear.weight`. Which parameters train is the freeze policy's business.
        """
        if self.tunable_linear is None:
            self.tunable_linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            self.tunable_linear.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.tunable_linear.weight.copy_(weight)
        return self.tunable_linear

    def forward(self, images, features: List[torch.Tensor], targets=None, language: Optional[dict] = None,
                positive_map=None, captions=None):
        """Returns `(detections or None, losses dict, fused visual features)` like the reference.

        `positive_map` is, in training, the binary (sum of boxes, T) tensor of all images' boxes; in eval, the
        label -> token-indices dict of the prompt.
        """
        embedding = language["embedded"]
        text_masks = language.get("masks")
        if self.tunable_linear is not None:
            offset = self.tunable_linear.weight[: embedding.size(1), :].unsqueeze(0)
            embedding = embedding + offset
            language["embedded"] = embedding
            language["hidden"] = language["hidden"] + offset

        out = self.head(features, language, embedding)
        anchors = self.anchor_generator(images, features)
        if self.training:
            losses = self._losses(out, targets, anchors, positive_map, text_masks, language, captions)
            return None, losses, out["fused_visual"]
        boxes = self.box_selector_test(out["box_regression"], out["centerness"], anchors,
                                       dot_product_logits=out["dot_product_logits"], positive_map=positive_map,
                                       box_cls=out["box_cls"])
        return boxes, {}, out["fused_visual"]

    def _losses(self, out, targets, anchors, positive_map, text_masks, language, captions) -> Dict[str, torch.Tensor]:
        raw = self.loss_evaluator(
            box_cls=out["box_cls"], box_regression=out["box_regression"], centerness=out["centerness"],
            targets=targets, anchors=anchors, positive_map=positive_map,
            dot_product_logits=out["dot_product_logits"], text_masks=text_masks,
            token_logits=out["token_logits"], proj_tokens=out["proj_tokens"],
            contrastive_logits=out["contrastive_logits"], captions=captions)
        losses = {"loss_reg": raw["loss_reg"], "loss_centerness": raw["loss_centerness"]}
        cls = raw.get("loss_cls")
        if cls is not None:
            losses["loss_cls"] = cls if self.use_classification_loss else 0.0 * cls
        for name in ("loss_token", "loss_contrastive_align", "loss_dot_product_token"):
            if raw.get(name) is not None:
                losses[name] = raw[name] * self.loss_weights.get(name, 1.0)
        mlm_labels = language.get("mlm_labels")
        if out["mlm_logits"] is not None and mlm_labels is not None:
            logits = out["mlm_logits"]
            losses["mlm_loss"] = nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), mlm_labels.view(-1), ignore_index=-100) * self.mlm_loss_coef
        return losses
