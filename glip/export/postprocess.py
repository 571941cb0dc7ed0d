"""The ATSS post-processing of one image in a formulation that traces (`torch.export`, ONNX).

It computes what `glip.modeling.head.atss_postprocessor.ATSSPostProcessor` computes with the MEAN token-to-class
aggregation (GLIP's), except that boxes are clipped to the network input tensor rather than to the unpadded
image (the caller clips to its image). The steps whose sizes depend on the data are written so that no Python
number is taken from a tensor:

* per level, the best `pre_nms_top_n` candidates: one `topk` over all (anchor, label) scores with
  non-candidates (class score <= `pre_nms_thresh`) pushed below every candidate, then the candidates kept with
  a mask (the reference's stable sort of the candidates gives the same order: `topk` breaks ties by the lower
  index, and the candidates are listed in index order);
* multi-label NMS as the fixed-size mask op `glip::ml_nms_mask` (`glip.export.ops`);
* the final cut (scores >= the `fpn_post_nms_top_n`-th best, ties kept) from the sorted scores.

The prompt comes as a `positive_map` (L, T) float tensor: row l spreads label l + 1 over its tokens (any
positive value marks a token); a class score is the mean of its tokens' probabilities.
"""
from typing import List, Sequence

import torch
from torch import nn

from glip.export import ops
from glip.modeling.head.levels import flatten_level

_NOT_A_CANDIDATE = -1.0  # below every candidate score (probability x sigmoid >= 0)


class FixedSizeATSSPostProcessor(nn.Module):
    """Detections of one image from the head's per-level outputs (batch size 1).

    Args: as `ATSSPostProcessor` (`pre_nms_thresh`, `pre_nms_top_n`, `nms_thresh`, `fpn_post_nms_top_n`,
    `min_size`, `box_coder`).
    """

    def __init__(self, pre_nms_thresh: float, pre_nms_top_n: int, nms_thresh: float, fpn_post_nms_top_n: int,
                 min_size: float, box_coder):
        super().__init__()
        self.pre_nms_thresh = float(pre_nms_thresh)
        self.pre_nms_top_n = int(pre_nms_top_n)
        self.nms_thresh = float(nms_thresh)
        self.fpn_post_nms_top_n = int(fpn_post_nms_top_n)
        self.min_size = float(min_size)
        self.box_coder = box_coder

    @classmethod
    def like(cls, postprocessor) -> "FixedSizeATSSPostProcessor":
        """The fixed-size twin of an `ATSSPostProcessor` (refuses settings it does not implement, by name)."""
        if postprocessor.score_agg != "MEAN":
            raise NotImplementedError(f"export implements MODEL.DYHEAD.SCORE_AGG MEAN, not {postprocessor.score_agg}")
        if postprocessor.bbox_aug_enabled:
            raise NotImplementedError("export does not implement TEST.USE_MULTISCALE (test-time augmentation)")
        if postprocessor.mdetr_style_aggregate_class_num != -1:
            raise NotImplementedError("export does not implement TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM")
        return cls(postprocessor.pre_nms_thresh, postprocessor.pre_nms_top_n, postprocessor.nms_thresh,
                   postprocessor.fpn_post_nms_top_n, postprocessor.min_size, postprocessor.box_coder)

    def forward(self, box_regression: Sequence[torch.Tensor], centerness: Sequence[torch.Tensor],
                anchors: Sequence[torch.Tensor], dot_product_logits: Sequence[torch.Tensor],
                positive_map: torch.Tensor, image_hw: Sequence) -> List[torch.Tensor]:
        """`[boxes (K, 4) xyxy, scores (K,), labels (K,) int64 1-based]`, sorted by descending score.

        Per level: `box_regression (1, 4A, H, W)`, `centerness (1, A, H, W)`, `anchors (H*W*A, 4)`,
        `dot_product_logits (1, H*W*A, T)`; `positive_map (L, T)`; `image_hw` the size boxes are clipped to.
        """
        tokens = (positive_map > 0).to(dot_product_logits[0].dtype)              # (L, T)
        counts = tokens.sum(1).clamp(min=1.0)                                       # (L,)
        boxes, scores, labels = [], [], []
        for reg, ctr, level_anchors, logits in zip(box_regression, centerness, anchors, dot_product_logits):
            level = self.select_level(reg, ctr, level_anchors, logits, tokens, counts, image_hw)
            boxes.append(level[0])
            scores.append(level[1])
            labels.append(level[2])
        return self.select_over_levels(torch.cat(boxes), torch.cat(scores), torch.cat(labels))

    def select_level(self, reg, ctr, anchors, logits, tokens, counts, image_hw):
        """Decoded, clipped candidates of one level: boxes (k, 4), scores (k,), labels (k,)."""
        class_scores = torch.matmul(logits[0].sigmoid(), tokens.t()) / counts     # (HWA, L)
        num_labels = class_scores.shape[1]
        weighted = class_scores * flatten_level(ctr, 1).reshape(-1, 1).sigmoid()
        masked = torch.where(class_scores > self.pre_nms_thresh, weighted,
                             torch.full_like(weighted, _NOT_A_CANDIDATE)).flatten()
        # padded with non-candidates so that k is a constant (no guard on the map size while exporting)
        padded = torch.cat((masked, masked.new_full((self.pre_nms_top_n,), _NOT_A_CANDIDATE)))
        top, index = padded.topk(self.pre_nms_top_n)
        keep = top > _NOT_A_CANDIDATE / 2
        top, index = top[keep], index[keep]
        location = torch.div(index, num_labels, rounding_mode="floor")
        label = index - location * num_labels + 1
        regression = flatten_level(reg, 4).reshape(-1, 4)
        decoded = self.box_coder.decode(regression[location], anchors[location])
        height, width = image_hw
        x = decoded[:, 0::2].clamp(min=0, max=width - 1)
        y = decoded[:, 1::2].clamp(min=0, max=height - 1)
        decoded = torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)
        big = ((decoded[:, 2] - decoded[:, 0] + 1 >= self.min_size)
               & (decoded[:, 3] - decoded[:, 1] + 1 >= self.min_size))
        return decoded[big], torch.sqrt(top[big]), label[big]

    def select_over_levels(self, boxes, scores, labels):
        """Multi-label NMS, then the detections scoring >= the `fpn_post_nms_top_n`-th best, by score."""
        kept = torch.nonzero(ops.ml_nms_mask(boxes, scores, labels, self.nms_thresh)).squeeze(1)
        # topk over all of them sorts (ONNX TopK puts the lower index first among equal scores)
        kept = kept[scores[kept].topk(kept.shape[0]).indices]
        sorted_scores = scores[kept]
        if self.fpn_post_nms_top_n > 0:
            # the n-th best score (the lowest when fewer), +inf when there is none
            cut = torch.cat((sorted_scores[: self.fpn_post_nms_top_n], sorted_scores.new_full((1,), float("inf"))))
            kept = kept[sorted_scores >= cut.min()]
        return [boxes[kept], scores[kept], labels[kept]]
