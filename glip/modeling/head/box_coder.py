"""ATSS box coder: anchor-relative (dx, dy, dw, dh) regression targets with the legacy +1 pixel widths.

Widths are `x2 - x1 + 1`, centres `(x1 + x2) / 2`; decoding returns `ctr -/+ 0.5 * (w_pred - 1)`.
"""
import math

import torch


class BoxCoder:
    """Encode boxes against anchors and decode regressions back into xyxy boxes.

    `weights = (wx, wy, ww, wh)` divide the deltas; `bbox_xform_clip` caps dw, dh before `exp`.
    """

    def __init__(self, weights=(10.0, 10.0, 5.0, 5.0), bbox_xform_clip=math.log(1000.0 / 16)):
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, gt_boxes, anchors):
        """Regression targets `(N, 4)` of xyxy `gt_boxes (N, 4)` relative to `anchors (N, 4)`."""
        ex_widths = anchors[:, 2] - anchors[:, 0] + 1
        ex_heights = anchors[:, 3] - anchors[:, 1] + 1
        ex_ctr_x = (anchors[:, 2] + anchors[:, 0]) / 2
        ex_ctr_y = (anchors[:, 3] + anchors[:, 1]) / 2

        gt_widths = gt_boxes[:, 2] - gt_boxes[:, 0] + 1
        gt_heights = gt_boxes[:, 3] - gt_boxes[:, 1] + 1
        gt_ctr_x = (gt_boxes[:, 2] + gt_boxes[:, 0]) / 2
        gt_ctr_y = (gt_boxes[:, 3] + gt_boxes[:, 1]) / 2

        wx, wy, ww, wh = self.weights
        return torch.stack((
            wx * (gt_ctr_x - ex_ctr_x) / ex_widths,
            wy * (gt_ctr_y - ex_ctr_y) / ex_heights,
            ww * torch.log(gt_widths / ex_widths),
            wh * torch.log(gt_heights / ex_heights),
        ), dim=1)

    def decode(self, preds, anchors):
        """xyxy boxes `(N, 4k)` from regressions `preds (N, 4k)` and `anchors (N, 4)`."""
        anchors = anchors.to(preds.dtype)
        widths = anchors[:, 2] - anchors[:, 0] + 1
        heights = anchors[:, 3] - anchors[:, 1] + 1
        ctr_x = (anchors[:, 2] + anchors[:, 0]) / 2
        ctr_y = (anchors[:, 3] + anchors[:, 1]) / 2

        wx, wy, ww, wh = self.weights
        dx = preds[:, 0::4] / wx
        dy = preds[:, 1::4] / wy
        dw = torch.clamp(preds[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(preds[:, 3::4] / wh, max=self.bbox_xform_clip)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None] - 1)
        half_h = 0.5 * (torch.exp(dh) * heights[:, None] - 1)

        pred_boxes = torch.empty_like(preds)
        pred_boxes[:, 0::4] = pred_ctr_x - half_w
        pred_boxes[:, 1::4] = pred_ctr_y - half_h
        pred_boxes[:, 2::4] = pred_ctr_x + half_w
        pred_boxes[:, 3::4] = pred_ctr_y + half_h
        return pred_boxes


def build_box_coder(cfg=None):
    """The ATSS/VLDyHead box coder; its weights and clip are fixed in the reference (no config keys)."""
    return BoxCoder()
