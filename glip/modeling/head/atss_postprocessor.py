"""ATSS test-time post-processing for grounding heads: token scores -> class scores -> boxes -> NMS.

Per level and image: class score > `pre_nms_thresh` marks candidates; the best `pre_nms_top_n` by
`score * sigmoid(centerness)` are decoded against their anchors, scored `sqrt(score * sigmoid(centerness))`,
clipped and filtered by size. Per image the levels are merged, multi-label NMS is applied and the best
`fpn_post_nms_top_n` detections are kept (`kthvalue`: every score >= the n-th largest survives).
"""
import torch
from torch import nn

from glip.modeling.head.levels import flatten_level
from glip.structures.bounding_box import BoxList
from glip.structures.boxlist_ops import boxlist_ml_nms, cat_boxlist, remove_small_boxes

SCORE_AGGREGATIONS = ("MEAN", "MAX", "POWER", "ONEHOT")


class PositiveMapAggregator:
    """Maps per-token probabilities to per-class scores for a prompt's `label_to_tokens` {label: [token indices]}.

    Built once per forward: a `(num_tokens, num_classes)` token-count (0/1) matrix with per-class token counts
    (MEAN) and a padded `(num_classes, max_tokens)` index table (MAX, POWER). Label j fills column `j - 1`; classes without
    tokens score 0. Call with probabilities `(N, L, num_tokens)` -> `(N, L, num_classes)`.
    """

    def __init__(self, label_to_tokens, num_tokens, num_classes, score_agg="MEAN", device=None):
        if score_agg not in SCORE_AGGREGATIONS:
            raise NotImplementedError("score_agg {} is not supported".format(score_agg))
        self.score_agg = score_agg
        self.num_classes = num_classes
        self.num_labels = len(label_to_tokens)
        token_lists = {}
        for label, tokens in label_to_tokens.items():
            tokens = [int(tokens)] if isinstance(tokens, int) else [int(t) for t in tokens]
            token_lists[int(label) - 1] = tokens
        classes = sorted(token_lists)
        self.classes = torch.tensor(classes, dtype=torch.int64, device=device)

        matrix = torch.zeros(num_tokens, num_classes, dtype=torch.float32, device=device)
        counts = torch.ones(num_classes, dtype=torch.float32, device=device)
        max_len = max([len(token_lists[c]) for c in classes] + [1])
        index = torch.zeros(len(classes), max_len, dtype=torch.int64, device=device)
        valid = torch.zeros(len(classes), max_len, dtype=torch.bool, device=device)
        for row, cls in enumerate(classes):
            tokens = token_lists[cls]
            for token in tokens:  # repeated tokens count repeatedly, as in a mean over the gathered columns
                matrix[token, cls] += 1.0
            counts[cls] = float(len(tokens))
            index[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64, device=device)
            index[row, len(tokens):] = tokens[0] if tokens else 0
            valid[row, : len(tokens)] = True
        self.matrix = matrix
        self.counts = counts
        self.index = index
        self.valid = valid

    def __call__(self, probs):
        if self.score_agg == "ONEHOT":
            return probs[:, :, : self.num_labels]
        if self.score_agg == "MEAN":
            return torch.matmul(probs, self.matrix.to(probs.dtype)) / self.counts.to(probs.dtype)
        scores = probs.new_zeros(probs.shape[0], probs.shape[1], self.num_classes)
        if self.classes.numel() == 0:
            return scores
        gathered = probs[:, :, self.index]
        if self.score_agg == "MAX":
            per_class = gathered.max(-1)[0]
        else:
            gathered = torch.where(self.valid, gathered, torch.ones_like(gathered))
            per_class = torch.pow(gathered.prod(-1), 1.0 / self.valid.sum(-1).to(probs.dtype))
        scores[:, :, self.classes] = per_class
        return scores


class ATSSPostProcessor(nn.Module):
    """Detections from VLDyHead / ATSS outputs.

    Args:
        pre_nms_thresh: class-score threshold for candidates (before centerness).
        pre_nms_top_n: max candidates per level and image.
        nms_thresh: multi-label NMS IoU threshold.
        fpn_post_nms_top_n: detections kept per image (<= 0: all).
        min_size: minimum +1 box side.
        num_classes: NUM_CLASSES incl. background; class-score width is `num_classes - 1` unless `box_cls` is
            given (its channel count) or `mdetr_style_aggregate_class_num > 0`.
        box_coder: a BoxCoder (decode(preds (K, 4), anchors (K, 4))).
        bbox_aug_enabled, bbox_aug_vote: with augmentation and no vote, skip the cross-level NMS/top-n.
        score_agg: "MEAN" | "MAX" | "POWER" | "ONEHOT" token-to-class aggregation.
    """

    def __init__(self, pre_nms_thresh, pre_nms_top_n, nms_thresh, fpn_post_nms_top_n, min_size, num_classes,
                 box_coder, bbox_aug_enabled=False, bbox_aug_vote=False, score_agg="MEAN",
                 mdetr_style_aggregate_class_num=-1):
        super().__init__()
        self.pre_nms_thresh = pre_nms_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.fpn_post_nms_top_n = fpn_post_nms_top_n
        self.min_size = min_size
        self.num_classes = num_classes
        self.box_coder = box_coder
        self.bbox_aug_enabled = bbox_aug_enabled
        self.bbox_aug_vote = bbox_aug_vote
        self.score_agg = score_agg
        self.mdetr_style_aggregate_class_num = mdetr_style_aggregate_class_num

    def _class_width(self, box_cls, num_anchors):
        if self.mdetr_style_aggregate_class_num != -1:
            return self.mdetr_style_aggregate_class_num
        if box_cls is not None:
            return box_cls[0].size(1) // num_anchors
        return self.num_classes - 1

    def forward_for_single_feature_map(self, box_regression, centerness, anchors, box_cls=None,
                                       token_logits=None, dot_product_logits=None, aggregator=None):
        """Candidates of one level: list over images of BoxList (fields "labels", "scores").

        `box_regression (N, 4A, H, W)`, `centerness (N, A, H, W)`, `anchors` list of N BoxLists `(HWA, 4)`,
        `box_cls (N, A*C, H, W)` logits, `token_logits (N, A*T, H, W)`, `dot_product_logits (N, HW, T)`.
        """
        n = box_regression.shape[0]
        a = box_regression.size(1) // 4
        if box_cls is not None:
            box_cls = flatten_level(box_cls, box_cls.size(1) // a).sigmoid()
        if token_logits is not None:
            t = token_logits.size(1) // a
            box_cls = aggregator(flatten_level(token_logits, t).sigmoid())
        if dot_product_logits is not None:
            box_cls = aggregator(dot_product_logits.sigmoid())

        box_regression = flatten_level(box_regression, 4).reshape(n, -1, 4)
        candidate_inds = box_cls > self.pre_nms_thresh
        pre_nms_top_n = candidate_inds.reshape(n, -1).sum(1).clamp(max=self.pre_nms_top_n)
        centerness = flatten_level(centerness, 1).reshape(n, -1).sigmoid()
        box_cls = box_cls * centerness[:, :, None]

        results = []
        for per_box_cls, per_box_regression, per_top_n, per_candidate_inds, per_anchors in zip(
                box_cls, box_regression, pre_nms_top_n, candidate_inds, anchors):
            per_box_cls = per_box_cls[per_candidate_inds]
            order = torch.sort(per_box_cls, descending=True, stable=True).indices[: int(per_top_n)]
            per_box_cls = per_box_cls[order]
            nonzeros = per_candidate_inds.nonzero()[order, :]
            per_box_loc = nonzeros[:, 0]
            per_class = nonzeros[:, 1] + 1

            detections = self.box_coder.decode(
                per_box_regression[per_box_loc, :].view(-1, 4),
                per_anchors.bbox[per_box_loc, :].view(-1, 4),
            )
            boxlist = BoxList(detections, per_anchors.size, mode="xyxy")
            boxlist.add_field("labels", per_class)
            boxlist.add_field("scores", torch.sqrt(per_box_cls))
            boxlist = boxlist.clip_to_image(remove_empty=False)
            boxlist = remove_small_boxes(boxlist, self.min_size)
            results.append(boxlist)
        return results

    def forward(self, box_regression, centerness, anchors, box_cls=None, token_logits=None,
                dot_product_logits=None, label_to_tokens=None):
        """List over images of BoxList (xyxy, image size of the anchors) with fields "labels", "scores".

        Inputs are lists over levels (see `forward_for_single_feature_map`); `anchors` is per image a list of
        per-level BoxLists; `label_to_tokens` is the prompt's {label: [token indices]}.
        """
        num_anchors = box_regression[0].size(1) // 4
        aggregator = None
        if token_logits is not None or dot_product_logits is not None:
            logits = dot_product_logits if dot_product_logits is not None else token_logits
            num_tokens = logits[0].shape[-1] if dot_product_logits is not None \
                else logits[0].size(1) // num_anchors
            aggregator = PositiveMapAggregator(label_to_tokens or {}, num_tokens,
                                               self._class_width(box_cls, num_anchors), self.score_agg,
                                               box_regression[0].device)

        per_level = []
        anchors_by_level = list(zip(*anchors))
        for idx, (reg, ctr, lvl_anchors) in enumerate(zip(box_regression, centerness, anchors_by_level)):
            per_level.append(self.forward_for_single_feature_map(
                reg, ctr, lvl_anchors,
                box_cls[idx] if box_cls is not None else None,
                token_logits[idx] if token_logits is not None else None,
                dot_product_logits[idx] if dot_product_logits is not None else None,
                aggregator,
            ))
        boxlists = [cat_boxlist(list(per_image)) for per_image in zip(*per_level)]
        if not (self.bbox_aug_enabled and not self.bbox_aug_vote):
            boxlists = self.select_over_all_levels(boxlists)
        return boxlists

    def select_over_all_levels(self, boxlists):
        """Per image: multi-label NMS, then keep detections scoring >= the `fpn_post_nms_top_n`-th best."""
        results = []
        for boxlist in boxlists:
            result = boxlist_ml_nms(boxlist, self.nms_thresh)
            num_detections = len(result)
            if num_detections > self.fpn_post_nms_top_n > 0:
                scores = result.get_field("scores")
                image_thresh, _ = torch.kthvalue(scores.cpu().float(),
                                                 num_detections - self.fpn_post_nms_top_n + 1)
                keep = torch.nonzero(scores >= image_thresh.item()).squeeze(1)
                result = result[keep]
            results.append(result)
        return results


def build_atss_postprocessor(cfg, box_coder, is_train=False):
    """ATSSPostProcessor from cfg.MODEL.ATSS.* (INFERENCE_TH[_TRAIN], PRE_NMS_TOP_N[_TRAIN], DETECTIONS_PER_IMG /
    POST_NMS_TOP_N_TRAIN, NMS_TH, NUM_CLASSES), cfg.MODEL.DYHEAD.SCORE_AGG, cfg.TEST.USE_MULTISCALE and
    cfg.TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM."""
    atss = cfg.MODEL.ATSS
    return ATSSPostProcessor(
        pre_nms_thresh=atss.INFERENCE_TH_TRAIN if is_train else atss.INFERENCE_TH,
        pre_nms_top_n=atss.PRE_NMS_TOP_N_TRAIN if is_train else atss.PRE_NMS_TOP_N,
        nms_thresh=atss.NMS_TH,
        fpn_post_nms_top_n=atss.POST_NMS_TOP_N_TRAIN if is_train else atss.DETECTIONS_PER_IMG,
        min_size=0,
        num_classes=atss.NUM_CLASSES,
        box_coder=box_coder,
        bbox_aug_enabled=cfg.TEST.USE_MULTISCALE,
        score_agg=cfg.MODEL.DYHEAD.SCORE_AGG,
        mdetr_style_aggregate_class_num=cfg.TEST.get("MDETR_STYLE_AGGREGATE_CLASS_NUM", -1),
    )
