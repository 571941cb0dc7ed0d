"""`VLDyHeadModule`: the dense grounding head of GLIP (the reference's `model.rpn`).

It owns the VLDyHead (`head`), the anchor generator, the ATSS loss and the ATSS post-processor. Calling the
module runs the head and the anchor generator; `losses` turns those outputs into the weighted loss dict
(training), `detect` into detections (evaluation):

    head_outputs = rpn(images, features, language)
    losses = rpn.losses(head_outputs, targets, token_targets, text_masks)      # training
    detections = rpn.detect(head_outputs, label_to_tokens)                     # evaluation
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
        loss_weights: multipliers of the named losses the loss evaluator reports (a loss without an entry is
            reported as computed; the REG weight is inside the loss evaluator).
        resizer: USE_CONTRASTIVE_ALIGN_LOSS: `rpn.resizer` (a `FeatureResizer`) mapping the language backbone's
            `embedded` text to the width the contrastive head reads; None otherwise.
    """

    def __init__(self, head: nn.Module, anchor_generator: nn.Module, loss_evaluator=None,
                 box_selector_test=None, lang_dim: int = 768, add_linear_layer: bool = False,
                 loss_weights: Optional[Dict[str, float]] = None, resizer: Optional[nn.Module] = None):
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.loss_evaluator = loss_evaluator
        self.box_selector_test = box_selector_test
        self.loss_weights = dict(loss_weights or {})
        self.tunable_linear = None
        self.resizer = resizer
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

    def apply_prompt_offset(self, language: dict) -> dict:
        """The language dict with `tunable_linear`'s first T rows added to `embedded` and `hidden` (a copy)."""
        if self.tunable_linear is None:
            return language
        offset = self.tunable_linear.weight[: language["embedded"].size(1), :].unsqueeze(0)
        language = dict(language)
        language["embedded"] = language["embedded"] + offset
        language["hidden"] = language["hidden"] + offset
        return language

    def forward(self, images, features: List[torch.Tensor], language: dict) -> Dict[str, object]:
        """Run the head on the FPN levels and the text; generate the anchors.

        Args:
            images: the ImageList the features come from (sizes for the anchors).
            features: FPN levels, 5 x (B, C, H_l, W_l).
            language: the language dict (`hidden`, `masks`, `embedded`, `aggregate`).

        Returns the head's output dict (see `VLDyHead.forward`) plus `anchors`: per image, per level a BoxList.
        """
        language = self.apply_prompt_offset(language)
        embedding = language["embedded"] if self.resizer is None else self.resizer(language["embedded"])
        outputs = self.head(features, language, embedding)
        outputs["anchors"] = self.anchor_generator(images, features)
        return outputs

    def losses(self, head_outputs: Dict[str, object], targets, token_targets: Optional[torch.Tensor],
               text_masks: Optional[torch.Tensor], mlm_labels: Optional[torch.Tensor] = None,
               captions=None) -> Dict[str, torch.Tensor]:
        """The loss evaluator's terms, each times its `loss_weights` entry.

        Args:
            head_outputs: what `forward` returned.
            targets: per image a BoxList with "labels".
            token_targets: `(sum of boxes, T)` binary map: row j marks the caption tokens of the batch's box j.
            text_masks: `(B, T)` attention mask of the caption tokens.
            mlm_labels: `(B, T)` masked-language-model labels (-100 ignored), or None.
            captions: the batch's captions (contrastive alignment re-tokenizes them).
        """
        raw = self.loss_evaluator(head_outputs, targets, head_outputs["anchors"], token_targets=token_targets,
                                  text_masks=text_masks, mlm_labels=mlm_labels, captions=captions)
        return {name: value * self.loss_weights[name] if name in self.loss_weights else value
                for name, value in raw.items()}

    def detect(self, head_outputs: Dict[str, object], label_to_tokens: Optional[dict]) -> list:
        """Per image a BoxList (fields `scores`, `labels`); `label_to_tokens` is the prompt's {label: [tokens]}.

        Scores come, as in the reference's post-processor, from the dot-product token logits if the head has them,
        else from the token classifier's logits (USE_TOKEN_LOSS), else from `cls_logits` (the contrastive-align
        logits are not scored, as in the reference).
        """
        dot_product_logits = head_outputs["dot_product_logits"]
        token_logits = head_outputs.get("token_logits") if dot_product_logits is None else None
        return self.box_selector_test(head_outputs["box_regression"], head_outputs["centerness"],
                                      head_outputs["anchors"], box_cls=head_outputs["box_cls"],
                                      token_logits=token_logits, dot_product_logits=dot_product_logits,
                                      label_to_tokens=label_to_tokens)
