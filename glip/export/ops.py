"""Custom ops that stand for data-dependent steps while exporting (`torch.library`).

`glip::ml_nms_mask(boxes (N, 4), scores (N,), labels (N,), iou_threshold) -> keep (N,) bool` is the reference's
multi-label NMS (`glip.layers.nms.ml_nms`: +1 IoU, strict `>`, suppression within a label) returned as a mask,
so that its output has a fixed size. Eagerly (and in an `ExportedProgram`) it runs `ml_nms`; in ONNX it becomes
`NonMaxSuppression` (`glip.export.onnx`).
"""
import torch

from glip.layers.nms import ml_nms


@torch.library.custom_op("glip::ml_nms_mask", mutates_args=())
def ml_nms_mask(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """(N,) bool: True for the boxes multi-label NMS keeps."""
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    keep[ml_nms(boxes, scores, labels, iou_threshold)] = True
    return keep


@ml_nms_mask.register_fake
def _(boxes, scores, labels, iou_threshold):
    return boxes.new_empty((boxes.shape[0],), dtype=torch.bool)
