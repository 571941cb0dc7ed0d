"""The ATSS training loss of GLIP's VLDyHead (the reference's `ATSSLossComputation`).

Per image, anchors are matched to ground-truth boxes with ATSS (`atss_assign`). From the match it builds
class labels, box regression targets (`BoxCoder.encode`) and token targets (the matched box's row of the batch's
binary `token_targets`, see glip/data/positive_map.py; unmatched anchors get a single 1 at the last token index,
the "no object" slot). Each loss term is one `ATSSLoss.loss_<term>` method (`ATSSLoss.LOSS_TERMS`):

* `loss_cls`: classic sigmoid focal loss of `cls_logits` / #positives (the head zeroes it unless
  USE_CLASSIFICATION_LOSS).
* `loss_dot_product_token` (and `loss_token`): binary token focal loss over (anchor, token) pairs with an
  unmasked token, / #positives.
* `loss_contrastive_align`: MDETR-style box<->token contrastive loss, / #positives.
* `loss_reg`: GIoU of decoded predictions vs decoded targets, weighted by the centerness targets and divided by
  their sum, times `reg_loss_weight`.
* `loss_centerness`: BCE-with-logits against the centerness of the anchor centre in its matched box, / #positives.
* `mlm_loss`: cross-entropy of the masked-language-model head (MLM_LOSS), where labels are given.
* `loss_shallow_contrastive`: pre-fusion anchor features vs text (USE_SHALLOW_CONTRASTIVE_LOSS), see
  `glip.modeling.head.shallow_contrastive`.

#positives (and the centerness-target sum) are averaged over all processes when torch.distributed is initialised,
so every process normalises by the same global count.
"""
import logging
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glip.layers.sigmoid_focal_loss import SigmoidFocalLoss, TokenSigmoidFocalLoss
from glip.modeling.head.atss_assigner import atss_assign
from glip.modeling.head.levels import flatten_levels
from glip.modeling.head.shallow_contrastive import (
    ShallowContrastiveOptions,
    add_shallow_contrastive_parameters,
    shallow_contrastive_loss,
)
from glip.utils.comm import get_world_size, reduce_sum

logger = logging.getLogger(__name__)


def _boxes(x) -> torch.Tensor:
    """The xyxy box tensor of a BoxList (or a plain `(N, 4)` tensor)."""
    if isinstance(x, torch.Tensor):
        return x
    if getattr(x, "mode", "xyxy") != "xyxy":
        x = x.convert("xyxy")
    return x.bbox


def centerness_targets(reg_targets: torch.Tensor, anchors: torch.Tensor, box_coder) -> torch.Tensor:
    """`sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))` `(P,)` of each anchor centre in its decoded gt box.

    Args:
        reg_targets: encoded matched gt boxes `(P, 4)`; anchors: `(P, 4)` xyxy.
    """
    gts = box_coder.decode(reg_targets, anchors)
    cx = (anchors[:, 2] + anchors[:, 0]) / 2
    cy = (anchors[:, 3] + anchors[:, 1]) / 2
    left_right = torch.stack([cx - gts[:, 0], gts[:, 2] - cx], dim=1)
    top_bottom = torch.stack([cy - gts[:, 1], gts[:, 3] - cy], dim=1)
    ratio = (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]) * \
        (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
    centerness = torch.sqrt(ratio)
    if torch.isnan(centerness).any():
        raise FloatingPointError("NaN centerness target: an ATSS positive's centre lies outside its box")
    return centerness


def giou_loss(pred_boxes: torch.Tensor, target_boxes: torch.Tensor,
              weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Summed `1 - GIoU` of xyxy boxes `(P, 4)` (areas without +1, eps 1e-7); weighted if `weight (P,)` sums > 0.

    Predicted boxes with x2 < x1 (or y2 < y1) are collapsed to zero width (height).
    """
    px1, py1 = pred_boxes[:, 0], pred_boxes[:, 1]
    px2 = torch.max(px1, pred_boxes[:, 2])
    py2 = torch.max(py1, pred_boxes[:, 3])
    tx1, ty1, tx2, ty2 = target_boxes.unbind(dim=1)
    pred_area = (px2 - px1) * (py2 - py1)
    target_area = (tx2 - tx1) * (ty2 - ty1)

    ix1, iy1 = torch.max(px1, tx1), torch.max(py1, ty1)
    ix2, iy2 = torch.min(px2, tx2), torch.min(py2, ty2)
    overlaps = (iy2 > iy1) & (ix2 > ix1)
    inter = torch.where(overlaps, (ix2 - ix1) * (iy2 - iy1), torch.zeros_like(px1))

    enclosing = (torch.max(px2, tx2) - torch.min(px1, tx1)) * (torch.max(py2, ty2) - torch.min(py1, ty1)) + 1e-7
    union = pred_area + target_area - inter + 1e-7
    gious = inter / union - (enclosing - union) / enclosing
    losses = 1 - gious
    if weight is not None and weight.sum() > 0:
        return (losses * weight).sum()
    if losses.numel() == 0:
        raise ValueError("giou_loss of no boxes")
    return losses.sum()


def fit_width(token_labels: torch.Tensor, width: int) -> torch.Tensor:
    """`(B, N, 256)` token labels cut (or zero-padded) to the text's `width` = MAX_QUERY_LEN tokens: positive maps
    are built 256 wide as in the reference, and tokens past the text length were truncated away."""
    if token_labels.shape[-1] > width:
        return token_labels[..., :width]
    if token_labels.shape[-1] < width:
        return F.pad(token_labels, (0, width - token_labels.shape[-1]))
    return token_labels


def contrastive_align_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """MDETR contrastive alignment: mean of the box->token and token->box losses (summed, unnormalised).

    Args:
        logits: `(B, N, T)` box-token similarities; positives: `(B, N, T)` bool.
    """
    positive_logits = -logits.masked_fill(~positives, 0)

    boxes_with_pos = positives.any(2)
    box_to_token = (positive_logits.sum(2) / (positives.sum(2) + 1e-6) + logits.logsumexp(2))
    box_to_token = box_to_token.masked_fill(~boxes_with_pos, 0).sum()

    tokens_with_pos = positives.any(1)
    token_to_box = (positive_logits.sum(1) / (positives.sum(1) + 1e-6) + logits.logsumexp(1))
    token_to_box = token_to_box.masked_fill(~tokens_with_pos, 0).sum()
    return (box_to_token + token_to_box) / 2


def tokens_positive_map(tokenized, batch_index: int, tokens_positive, width: int) -> torch.Tensor:
    """Bool map `(n_boxes, width)` of the tokens covering each box's character spans.

    `tokens_positive[j]` is a list of `(begin, end)` character spans; a span maps to tokens
    `char_to_token(begin) .. char_to_token(end - 1)`, falling back to begin+1, begin+2 / end-2, end-3 when a
    character is not inside a token (spaces); spans that still do not resolve are skipped.
    """
    def lookup(*chars):
        for c in chars:
            try:
                pos = tokenized.char_to_token(batch_index, c)
            except Exception:  # character index outside the text
                return None
            if pos is not None:
                return pos
        return None

    out = torch.zeros((len(tokens_positive), width), dtype=torch.bool)
    for j, spans in enumerate(tokens_positive):
        for beg, end in spans:
            beg_pos = lookup(beg, beg + 1, beg + 2)
            end_pos = lookup(end - 1, end - 2, end - 3)
            if beg_pos is None or end_pos is None:
                continue
            out[j, beg_pos:end_pos + 1] = True
    return out


class MatchedBatch:
    """What every loss term reads: the head outputs, the ATSS match and the batch's flattened targets.

    Attributes:
        outputs: the head's output dict (`box_cls`, `box_regression`, `centerness`: per level
            `(B, A*K, H_l, W_l)`; `dot_product_logits`, `contrastive_logits`: per level `(B, H_l*W_l*A, T)`;
            `token_logits`: per level `(B, A*T, H_l, W_l)`; `mlm_logits` `(B, T, vocab)`; absent or None when off).
        targets, captions, token_targets, text_masks, mlm_labels: as given to `ATSSLoss.forward`.
        prepared: `ATSSLoss.prepare_targets`'s per-image lists.
        num_anchors: anchors per location A.
        box_regression, centerness: `(sum of anchors, 4)` / `(sum of anchors,)` float32, images concatenated.
        labels, reg_targets, anchors: the matching targets / anchor boxes in the same order.
        pos_inds: `(P,)` indices of the positive anchors.
        num_gpus, num_pos_avg: processes, and positives per process averaged over them (at least 1).
        token_labels: `(B, sum of anchors per image, T)` token targets cut to the text width, or None.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)


class ATSSLoss(nn.Module):
    """ATSS matching + GLIP's detection / grounding losses.

    Each loss is one method `loss_<term>(batch: MatchedBatch) -> {name: scalar}` (empty when the term is off or
    has no input), run in the order of `LOSS_TERMS`; adding a loss is one method and one entry there.

    Args:
        box_coder: a `BoxCoder` (weights (10, 10, 5, 5)) with `encode(gt, anchors)` / `decode(codes, anchors)`.
        topk: ATSS candidates per level and box (MODEL.ATSS.TOPK).
        num_anchors_per_location: len(RPN.ASPECT_RATIOS) * RPN.SCALES_PER_OCTAVE.
        focal_alpha, focal_gamma: classic focal loss of `box_cls` (MODEL.FOCAL.LOSS_ALPHA / LOSS_GAMMA).
        token_alpha, token_gamma: token focal loss (DYHEAD.FUSE_CONFIG.TOKEN_ALPHA / TOKEN_GAMMA).
        reg_loss_weight: multiplies the GIoU loss (MODEL.ATSS.REG_LOSS_WEIGHT).
        use_dot_product_token_loss, use_token_loss, use_contrastive_align_loss: which token losses to compute.
        tokenizer: tokenizer used to locate `tokens_positive` spans for the contrastive-align map (the reference
            re-tokenizes the captions with padding "longest"); without it the `token_targets` rows are used.
        shallow: `ShallowContrastiveOptions` to compute `loss_shallow_contrastive` (adds its parameters here, as
            the reference: `shallow_contrastive_projection_image/_text`, `shallow_log_scale`), or None.
    """

    LOSS_TERMS = ("boxes", "cls", "token", "contrastive_align", "dot_product_token", "mlm", "shallow_contrastive")

    def __init__(self, box_coder, topk: int = 9, num_anchors_per_location: int = 1, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, token_alpha: float = 0.25, token_gamma: float = 2.0,
                 reg_loss_weight: float = 2.0, use_dot_product_token_loss: bool = True, use_token_loss: bool = False,
                 use_contrastive_align_loss: bool = False, tokenizer=None,
                 shallow: Optional[ShallowContrastiveOptions] = None):
        super().__init__()
        self.shallow = shallow
        if shallow is not None:
            add_shallow_contrastive_parameters(self, shallow.image_dim, shallow.text_dim, shallow.hidden_dim,
                                               shallow.log_scale)
        self.box_coder = box_coder
        self.topk = topk
        self.num_anchors_per_location = num_anchors_per_location
        self.cls_loss_func = SigmoidFocalLoss(focal_gamma, focal_alpha)
        self.token_loss_func = TokenSigmoidFocalLoss(token_alpha, token_gamma)
        self.reg_loss_weight = reg_loss_weight
        self.use_dot_product_token_loss = use_dot_product_token_loss
        self.use_token_loss = use_token_loss
        self.use_contrastive_align_loss = use_contrastive_align_loss
        self.tokenizer = tokenizer

    def prepare_targets(self, targets, anchors, token_targets: Optional[torch.Tensor] = None) -> Dict[str, list]:
        """Match every image's anchors and build its targets.

        Args:
            targets: per image a BoxList (xyxy) with a "labels" field.
            anchors: per image, per level a BoxList (or `(N_l, 4)` tensor) of anchors.
            token_targets: `(sum of boxes, T)` binary map, the images' rows concatenated in order.

        Returns a dict of per-image lists: `matched_idxs` `(N,)` (-1 negative), `labels` `(N,)` (0 negative),
        `reg_targets` `(N, 4)` (negatives encode box 0, as the reference), `token_labels` `(N, T)` (if
        `token_targets` is given).
        """
        out = {"matched_idxs": [], "labels": [], "reg_targets": [], "token_labels": []}
        offset = 0
        for target, anchors_per_image in zip(targets, anchors):
            gt_boxes = _boxes(target)
            levels = [_boxes(a) for a in anchors_per_image]
            matched = atss_assign(levels, gt_boxes, self.topk, self.num_anchors_per_location)
            labels, reg_targets = self._box_targets(matched, gt_boxes, target.get_field("labels"),
                                                    torch.cat(levels, dim=0))
            out["matched_idxs"].append(matched)
            out["labels"].append(labels)
            out["reg_targets"].append(reg_targets)
            if token_targets is not None:
                num_gt = gt_boxes.shape[0]
                out["token_labels"].append(self._token_labels(matched, token_targets[offset:offset + num_gt],
                                                              num_gt, token_targets.shape[1]))
                offset += num_gt
        return out

    def _box_targets(self, matched, gt_boxes, gt_labels, anchor_boxes):
        """`(labels (N,), reg_targets (N, 4))` of one image's anchors from their matched gt index (-1 negative)."""
        if gt_boxes.shape[0] == 0:
            return torch.zeros_like(matched), torch.zeros_like(anchor_boxes)
        safe = matched.clamp(min=0)
        matched_labels = gt_labels.to(matched.device)[safe]
        labels = torch.where(matched >= 0, matched_labels, torch.zeros_like(matched_labels))
        return labels, self.box_coder.encode(gt_boxes[safe], anchor_boxes)

    @staticmethod
    def _token_labels(matched, rows, num_gt, width):
        """`(N, width)` float: a positive's matched box's row of `rows (num_gt, width)`, else the no-object slot."""
        rows = rows.to(device=matched.device, dtype=torch.float32)
        no_object = torch.zeros(width, dtype=torch.float32, device=rows.device)
        no_object[-1] = 1
        if num_gt == 0:
            return no_object[None, :].repeat(matched.shape[0], 1)
        return torch.where((matched >= 0)[:, None], rows[matched.clamp(min=0)], no_object[None, :])

    def _box_token_maps(self, batch: MatchedBatch, width: int) -> list:
        """Per image `(boxes, width)` bool: the caption tokens of each box (from its `tokens_positive` spans in the
        re-tokenized caption, as the reference; else the `token_targets` rows)."""
        tokenized = None
        if self.tokenizer is not None and batch.captions is not None:
            tokenized = self.tokenizer(list(batch.captions), padding="longest", return_tensors="pt")
        maps, offset = [], 0
        for i, target in enumerate(batch.targets):
            num_gt = _boxes(target).shape[0]
            spans_field = "tokens_positive" if target.has_field("tokens_positive") else "tokens"
            if tokenized is not None and target.has_field(spans_field):
                maps.append(tokens_positive_map(tokenized, i, target.get_field(spans_field), width))
            elif batch.token_targets is None:
                raise ValueError("contrastive losses need the token_targets or captions + 'tokens_positive' spans")
            else:
                maps.append(fit_width(batch.token_targets[offset:offset + num_gt], width) > 0)
            offset += num_gt
        return maps

    def _contrastive_maps(self, batch: MatchedBatch, width: int) -> torch.Tensor:
        """`(B, N, width)` bool: each positive anchor's matched box's tokens (negatives all False)."""
        maps = []
        for box_map, matched in zip(self._box_token_maps(batch, width), batch.prepared["matched_idxs"]):
            box_map = box_map.to(matched.device)
            if box_map.shape[0] == 0:
                maps.append(torch.zeros((matched.shape[0], width), dtype=torch.bool, device=matched.device))
            else:
                maps.append(box_map[matched.clamp(min=0)] & (matched >= 0)[:, None])
        return torch.stack(maps, dim=0)

    def match(self, outputs: dict, targets, anchors, token_targets=None, text_masks=None, mlm_labels=None,
              captions=None) -> MatchedBatch:
        """ATSS-match the batch and flatten predictions and targets (see `MatchedBatch`)."""
        wants_tokens = (self.use_dot_product_token_loss and outputs.get("dot_product_logits") is not None) or \
            (self.use_token_loss and outputs.get("token_logits") is not None)
        if wants_tokens and token_targets is None:
            raise ValueError("the token losses need the (sum of boxes, T) token_targets of the batch")
        box_regression = [x.float() for x in outputs["box_regression"]]
        prepared = self.prepare_targets(targets, anchors, token_targets)
        labels = torch.cat(prepared["labels"], dim=0)
        pos_inds = torch.nonzero(labels > 0).squeeze(1)
        num_gpus = get_world_size()
        total_num_pos = reduce_sum(pos_inds.new_tensor([pos_inds.numel()])).item()
        token_labels = None
        if token_targets is not None:
            token_labels = torch.stack(prepared["token_labels"], dim=0)
            if text_masks is not None:
                token_labels = fit_width(token_labels, text_masks.shape[-1])
        return MatchedBatch(
            outputs=outputs, targets=targets, captions=captions, token_targets=token_targets,
            text_masks=text_masks, mlm_labels=mlm_labels, prepared=prepared,
            num_anchors=box_regression[0].shape[1] // 4,
            box_regression=flatten_levels(box_regression, 4).reshape(-1, 4),
            centerness=flatten_levels([x.float() for x in outputs["centerness"]], 1).reshape(-1),
            labels=labels, reg_targets=torch.cat(prepared["reg_targets"], dim=0),
            anchors=torch.cat([torch.cat([_boxes(a) for a in per_image], dim=0) for per_image in anchors], dim=0),
            pos_inds=pos_inds, num_gpus=num_gpus, num_pos_avg=max(total_num_pos / float(num_gpus), 1.0),
            token_labels=token_labels)

    def loss_boxes(self, batch: MatchedBatch) -> Dict[str, torch.Tensor]:
        """`loss_reg` (centerness-weighted GIoU x reg_loss_weight) and `loss_centerness` (BCE) of the positives."""
        pos_inds = batch.pos_inds
        box_regression_pos = batch.box_regression[pos_inds]
        centerness_pos = batch.centerness[pos_inds]
        if pos_inds.numel() > 0:
            reg_targets_pos = batch.reg_targets[pos_inds]
            anchors_pos = batch.anchors[pos_inds]
            ctr_targets = centerness_targets(reg_targets_pos, anchors_pos, self.box_coder)
            ctr_sum_avg = reduce_sum(ctr_targets.sum()).item() / float(batch.num_gpus)
            pred_boxes = self.box_coder.decode(box_regression_pos, anchors_pos)
            gt_boxes = self.box_coder.decode(reg_targets_pos, anchors_pos)
            reg_loss = giou_loss(pred_boxes, gt_boxes, weight=ctr_targets) / ctr_sum_avg
            centerness_loss = F.binary_cross_entropy_with_logits(
                centerness_pos, ctr_targets, reduction="sum") / batch.num_pos_avg
        else:
            reg_loss = box_regression_pos.sum()
            reduce_sum(batch.centerness.new_zeros(()))  # the other processes' centerness-sum collective
            centerness_loss = centerness_pos.sum()
        return {"loss_reg": reg_loss * self.reg_loss_weight, "loss_centerness": centerness_loss}

    def loss_cls(self, batch: MatchedBatch) -> Dict[str, torch.Tensor]:
        """`loss_cls`: sigmoid focal loss of the classic class logits / #positives."""
        box_cls = batch.outputs.get("box_cls")
        if box_cls is None:
            return {}
        num_classes = box_cls[0].shape[1] // batch.num_anchors
        logits = flatten_levels([x.float() for x in box_cls], num_classes).reshape(-1, num_classes)
        return {"loss_cls": self.cls_loss_func(logits, batch.labels.int()) / batch.num_pos_avg}

    def loss_token(self, batch: MatchedBatch) -> Dict[str, torch.Tensor]:
        """`loss_token`: token focal loss of the per-location token classifier / #positives."""
        token_logits = batch.outputs.get("token_logits")
        if not self.use_token_loss or token_logits is None:
            return {}
        num_tokens = token_logits[0].shape[1] // batch.num_anchors
        logits = flatten_levels([x.float() for x in token_logits], num_tokens)
        return {"loss_token": self.token_loss_func(logits, batch.token_labels, batch.text_masks) / batch.num_pos_avg}

    def loss_contrastive_align(self, batch: MatchedBatch) -> Dict[str, torch.Tensor]:
        """`loss_contrastive_align`: MDETR box<->token contrastive loss / #positives."""
        contrastive_logits = batch.outputs.get("contrastive_logits")
        if not self.use_contrastive_align_loss or contrastive_logits is None:
            return {}
        logits = torch.cat([x.float() for x in contrastive_logits], dim=1)
        maps = self._contrastive_maps(batch, logits.shape[-1])
        return {"loss_contrastive_align": contrastive_align_loss(logits, maps) / batch.num_pos_avg}

    def loss_dot_product_token(self, batch: MatchedBatch) -> Dict[str, torch.Tensor]:
        """`loss_dot_product_token`: token focal loss of the region-token dot products / #positives."""
        dot_product_logits = batch.outputs.get("dot_product_logits")
        if not self.use_dot_product_token_loss or dot_product_logits is None:
            return {}
        logits = torch.cat([x.float() for x in dot_product_logits], dim=1)
        loss = self.token_loss_func(logits, batch.token_labels, batch.text_masks) / batch.num_pos_avg
        return {"loss_dot_product_token": loss}

    def loss_mlm(self, batch: MatchedBatch) -> Dict[str, torch.Tensor]:
        """`mlm_loss`: mean cross-entropy of the masked-language-model head over the labelled positions (-100
        ignored). A batch without any labelled position gives 0 (the reference's mean is then NaN and its trainer
        zeroes the whole step's loss)."""
        logits = batch.outputs.get("mlm_logits")
        if logits is None or batch.mlm_labels is None:
            return {}
        labels = batch.mlm_labels.to(logits.device).reshape(-1)
        logits = logits.float().reshape(-1, logits.size(-1))
        if not bool((labels != -100).any()):
            return {"mlm_loss": logits.sum() * 0.0}
        return {"mlm_loss": F.cross_entropy(logits, labels, ignore_index=-100)}

    def loss_shallow_contrastive(self, batch: MatchedBatch) -> Dict[str, torch.Tensor]:
        """`loss_shallow_contrastive`: pre-fusion anchor features vs the head's text (see `shallow_contrastive`)."""
        features, text = batch.outputs.get("shallow_img_emb_feats"), batch.outputs.get("shallow_text_emb")
        if self.shallow is None or features is None or text is None:
            return {}
        for field in ("original_od_label", "positive_map_for_od_labels"):
            if not all(t.has_field(field) for t in batch.targets):
                raise ValueError("the shallow contrastive loss needs the targets' {!r} field".format(field))
        loss = shallow_contrastive_loss(
            torch.cat([f.float() for f in features], dim=1), text.float(), batch.text_masks,
            batch.prepared["matched_idxs"], [t.get_field("original_od_label") for t in batch.targets],
            [t.get_field("positive_map_for_od_labels") for t in batch.targets],
            self._box_token_maps(batch, text.shape[1]), self, batch.num_pos_avg,
            max_positive=self.shallow.max_positive_anchors, zero_pads=self.shallow.zero_pads)
        return {"loss_shallow_contrastive": loss}

    def forward(self, outputs: dict, targets, anchors, token_targets: Optional[torch.Tensor] = None,
                text_masks: Optional[torch.Tensor] = None, mlm_labels: Optional[torch.Tensor] = None,
                captions: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Raw (unweighted, except `loss_reg` x reg_loss_weight) losses.

        Args:
            outputs: the head's output dict (see `MatchedBatch`); `box_regression` (after the level Scale) and
                `centerness` are required.
            targets: per image a BoxList with "labels" (and "tokens_positive" for contrastive align).
            anchors: per image, per level anchor BoxLists (or `(H_l*W_l*A, 4)` tensors).
            token_targets: `(sum of boxes, T)` binary token map of all images' boxes.
            text_masks: `(B, T)` attention mask of the caption tokens.
            mlm_labels: `(B, T)` masked-language-model labels, or None.
            captions: the batch's captions, for the contrastive-align token spans.

        Returns a dict with `loss_reg`, `loss_centerness` and, when computed, `loss_cls`, `loss_token`,
        `loss_contrastive_align`, `loss_dot_product_token`, `mlm_loss`, `loss_shallow_contrastive` (scalars), in
        that order.
        """
        batch = self.match(outputs, targets, anchors, token_targets, text_masks, mlm_labels, captions)
        losses = {}
        for term in self.LOSS_TERMS:
            losses.update(getattr(self, "loss_" + term)(batch))
        return losses


def build_atss_loss(cfg, box_coder) -> ATSSLoss:
    """`ATSSLoss` from the official config keys (MODEL.ATSS, MODEL.FOCAL, MODEL.DYHEAD.FUSE_CONFIG, MODEL.RPN)."""
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    tokenizer, shallow = None, None
    if fuse.USE_CONTRASTIVE_ALIGN_LOSS or fuse.USE_SHALLOW_CONTRASTIVE_LOSS:
        from glip.modeling.language.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    if fuse.USE_SHALLOW_CONTRASTIVE_LOSS:
        shallow = ShallowContrastiveOptions(
            image_dim=cfg.MODEL.DYHEAD.CHANNELS * len(cfg.MODEL.RPN.ASPECT_RATIOS) * cfg.MODEL.RPN.SCALES_PER_OCTAVE,
            text_dim=cfg.MODEL.LANGUAGE_BACKBONE.LANG_DIM, hidden_dim=fuse.SHALLOW_CONTRASTIVE_HIDDEN_DIM,
            log_scale=cfg.MODEL.DYHEAD.SHALLOW_LOG_SCALE, max_positive_anchors=fuse.SHALLOW_MAX_POSITIVE_ANCHORS,
            zero_pads=fuse.USE_SHALLOW_ZERO_PADS)
    return ATSSLoss(
        box_coder,
        topk=cfg.MODEL.ATSS.TOPK,
        num_anchors_per_location=len(cfg.MODEL.RPN.ASPECT_RATIOS) * cfg.MODEL.RPN.SCALES_PER_OCTAVE,
        focal_alpha=cfg.MODEL.FOCAL.LOSS_ALPHA,
        focal_gamma=cfg.MODEL.FOCAL.LOSS_GAMMA,
        token_alpha=fuse.TOKEN_ALPHA,
        token_gamma=fuse.TOKEN_GAMMA,
        reg_loss_weight=cfg.MODEL.ATSS.REG_LOSS_WEIGHT,
        use_dot_product_token_loss=fuse.USE_DOT_PRODUCT_TOKEN_LOSS,
        use_token_loss=fuse.USE_TOKEN_LOSS,
        use_contrastive_align_loss=fuse.USE_CONTRASTIVE_ALIGN_LOSS,
        tokenizer=tokenizer,
        shallow=shallow,
    )
