"""Operations on BoxLists: IoU (legacy +1 areas), concatenation, small-box removal and (multi-label) NMS."""
import torch

from glip.layers.nms import ml_nms, nms
from glip.structures.bounding_box import BoxList

_TO_REMOVE = 1


def box_iou_legacy(boxes1, boxes2):
    """IoU matrix `(N, M)` of xyxy boxes `(N, 4)` and `(M, 4)` with +1 pixel widths (maskrcnn_benchmark)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0] + _TO_REMOVE) * (boxes1[:, 3] - boxes1[:, 1] + _TO_REMOVE)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + _TO_REMOVE) * (boxes2[:, 3] - boxes2[:, 1] + _TO_REMOVE)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt + _TO_REMOVE).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def boxlist_iou(boxlist1, boxlist2):
    """IoU `(N, M)` between two xyxy BoxLists of the same image size (+1 areas)."""
    if boxlist1.size != boxlist2.size:
        raise RuntimeError("boxlists should have same image size, got {}, {}".format(boxlist1, boxlist2))
    return box_iou_legacy(boxlist1.bbox, boxlist2.bbox)


def _cat(tensors, dim=0):
    if len(tensors) == 1:
        return tensors[0]
    if isinstance(tensors[0], torch.Tensor):
        return torch.cat(tensors, dim)
    return cat_boxlist(tensors)


def cat_boxlist(bboxes):
    """Concatenate BoxLists of the same image size, mode and field names into one BoxList."""
    if not isinstance(bboxes, (list, tuple)) or not all(isinstance(b, BoxList) for b in bboxes):
        raise TypeError("cat_boxlist expects a list of BoxList")
    size, mode = bboxes[0].size, bboxes[0].mode
    fields = set(bboxes[0].fields())
    if not all(b.size == size for b in bboxes):
        raise ValueError("cat_boxlist: all image sizes must match")
    if not all(b.mode == mode for b in bboxes):
        raise ValueError("cat_boxlist: all modes must match")
    if not all(set(b.fields()) == fields for b in bboxes):
        raise ValueError("cat_boxlist: all field names must match")
    out = BoxList(_cat([b.bbox for b in bboxes], dim=0), size, mode)
    for field in bboxes[0].fields():
        out.add_field(field, _cat([b.get_field(field) for b in bboxes], dim=0))
    return out


def remove_small_boxes(boxlist, min_size):
    """Keep boxes whose +1 width and height are both >= `min_size`."""
    xywh = boxlist.convert("xywh").bbox
    keep = ((xywh[:, 2] >= min_size) & (xywh[:, 3] >= min_size)).nonzero().squeeze(1)
    return boxlist[keep]


def boxlist_nms(boxlist, nms_thresh, max_proposals=-1, score_field="score"):
    """Class-agnostic NMS (+1 IoU, suppress iff IoU > thresh); keeps the survivors in descending score order."""
    if nms_thresh <= 0:
        return boxlist
    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    keep = nms(boxlist.bbox, boxlist.get_field(score_field), nms_thresh)
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxlist[keep].convert(mode)


def boxlist_ml_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores", label_field="labels"):
    """Multi-label NMS (suppression only among boxes of the same label), the CUDA `ml_nms` semantics.

    Survivors come in descending score order; `max_proposals > 0` truncates them.
    """
    if nms_thresh <= 0:
        return boxlist
    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    keep = ml_nms(boxlist.bbox, boxlist.get_field(score_field), boxlist.get_field(label_field), nms_thresh)
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxlist[keep].convert(mode)
