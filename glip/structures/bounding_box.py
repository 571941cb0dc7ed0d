"""`BoxList`: a set of boxes `(N, 4)` belonging to one image, plus per-box fields.

Follows the legacy maskrcnn_benchmark pixel convention: in "xyxy" mode a box covering pixels x1..x2 has width
`x2 - x1 + 1` (the "+1" / TO_REMOVE rule used by `convert`, `area`, `transpose` and `clip_to_image`).
"""
import torch

FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1

_MODES = ("xyxy", "xywh")
_TO_REMOVE = 1


class BoxList:
    """Boxes `bbox (N, 4)` float32 of an image of `size = (width, height)` in `mode` "xyxy" or "xywh".

    Extra per-box data (labels, scores, masks, ...) lives in fields; tensor fields are indexed with the boxes,
    non-tensor fields must implement the same geometric methods (`resize`, `transpose`, `crop`).
    """

    def __init__(self, bbox, image_size, mode="xyxy"):
        device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
        if not isinstance(bbox, torch.Tensor) or bbox.dtype != torch.float32:
            bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        if bbox.dim() != 2:
            raise ValueError("bbox should have 2 dimensions, got {}".format(bbox.dim()))
        if bbox.size(-1) != 4:
            raise ValueError("last dimension of bbox should have a size of 4, got {}".format(bbox.size(-1)))
        if mode not in _MODES:
            raise ValueError("mode should be 'xyxy' or 'xywh'")
        self.bbox = bbox
        self.size = image_size
        self.mode = mode
        self.extra_fields = {}

    # ----------------------------------------------------------------- fields
    def add_field(self, field, field_data):
        self.extra_fields[field] = field_data

    def get_field(self, field):
        return self.extra_fields[field]

    def has_field(self, field):
        return field in self.extra_fields

    def fields(self):
        return list(self.extra_fields.keys())

    def _copy_extra_fields(self, other):
        for key, value in other.extra_fields.items():
            self.extra_fields[key] = value

    def copy_with_fields(self, fields, skip_missing=False):
        """A BoxList sharing `bbox` with only the named field(s)."""
        out = BoxList(self.bbox, self.size, self.mode)
        if not isinstance(fields, (list, tuple)):
            fields = [fields]
        for field in fields:
            if self.has_field(field):
                out.add_field(field, self.get_field(field))
            elif not skip_missing:
                raise KeyError("Field '{}' not found in {}".format(field, self))
        return out

    # ------------------------------------------------------------------ modes
    def convert(self, mode):
        """Same boxes in `mode` ("xyxy" <-> "xywh" with w = x2 - x1 + 1); returns self if already there."""
        if mode not in _MODES:
            raise ValueError("mode should be 'xyxy' or 'xywh'")
        if mode == self.mode:
            return self
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if mode == "xyxy":
            bbox = torch.cat((xmin, ymin, xmax, ymax), dim=-1)
        else:
            bbox = torch.cat((xmin, ymin, xmax - xmin + _TO_REMOVE, ymax - ymin + _TO_REMOVE), dim=1)
        out = BoxList(bbox, self.size, mode=mode)
        out._copy_extra_fields(self)
        return out

    def _split_into_xyxy(self):
        """Four `(N, 1)` tensors x1, y1, x2, y2."""
        if self.mode == "xyxy":
            return self.bbox.split(1, dim=-1)
        xmin, ymin, w, h = self.bbox.split(1, dim=-1)
        return (xmin, ymin,
                xmin + (w - _TO_REMOVE).clamp(min=0),
                ymin + (h - _TO_REMOVE).clamp(min=0))

    # -------------------------------------------------------------- geometry
    def resize(self, size, *args, **kwargs):
        """Copy rescaled to image `size = (w, h)`: x times w/W, y times h/H (no +1). Non-tensor fields are
        resized too; tensor fields are copied unchanged."""
        ratios = tuple(float(s) / float(s_orig) for s, s_orig in zip(size, self.size))
        if ratios[0] == ratios[1]:
            out = BoxList(self.bbox * ratios[0], size, mode=self.mode)
            self._add_transformed_fields(out, lambda v: v.resize(size, *args, **kwargs))
            return out
        ratio_w, ratio_h = ratios
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        scaled = torch.cat((xmin * ratio_w, ymin * ratio_h, xmax * ratio_w, ymax * ratio_h), dim=-1)
        out = BoxList(scaled, size, mode="xyxy")
        self._add_transformed_fields(out, lambda v: v.resize(size, *args, **kwargs))
        return out.convert(self.mode)

    def transpose(self, method):
        """Flip: FLIP_LEFT_RIGHT maps x to `W - x - 1` (pixel convention); FLIP_TOP_BOTTOM maps y to `H - y`
        (no +1, as the reference)."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise NotImplementedError("Only FLIP_LEFT_RIGHT and FLIP_TOP_BOTTOM implemented")
        image_width, image_height = self.size
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if method == FLIP_LEFT_RIGHT:
            boxes = (image_width - xmax - _TO_REMOVE, ymin, image_width - xmin - _TO_REMOVE, ymax)
        else:
            boxes = (xmin, image_height - ymax, xmax, image_height - ymin)
        out = BoxList(torch.cat(boxes, dim=-1), self.size, mode="xyxy")
        self._add_transformed_fields(out, lambda v: v.transpose(method))
        return out.convert(self.mode)

    def crop(self, box):
        """Boxes relative to the region `box = (left, top, right, bottom)`, clamped to [0, right-left] x
        [0, bottom-top]; the new image size is (right-left, bottom-top). Empty boxes are kept."""
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        w, h = box[2] - box[0], box[3] - box[1]
        cropped = torch.cat((
            (xmin - box[0]).clamp(min=0, max=w),
            (ymin - box[1]).clamp(min=0, max=h),
            (xmax - box[0]).clamp(min=0, max=w),
            (ymax - box[1]).clamp(min=0, max=h),
        ), dim=-1)
        out = BoxList(cropped, (w, h), mode="xyxy")
        self._add_transformed_fields(out, lambda v: v.crop(box))
        return out.convert(self.mode)

    def _add_transformed_fields(self, out, transform):
        for key, value in self.extra_fields.items():
            if not isinstance(value, torch.Tensor):
                value = transform(value)
            out.add_field(key, value)

    def clip_to_image(self, remove_empty=True):
        """Clamp (in xyxy) x to [0, w-1] and y to [0, h-1]; optionally drop boxes with x2 <= x1 or y2 <= y1.

        Modifies `self.bbox` in place (as the reference) and returns self or the filtered copy.
        """
        w_max = self.size[0] - _TO_REMOVE
        h_max = self.size[1] - _TO_REMOVE
        self.bbox = torch.stack((
            self.bbox[:, 0].clamp(min=0, max=w_max),
            self.bbox[:, 1].clamp(min=0, max=h_max),
            self.bbox[:, 2].clamp(min=0, max=w_max),
            self.bbox[:, 3].clamp(min=0, max=h_max),
        ), dim=-1)
        if remove_empty:
            box = self.bbox
            keep = (box[:, 3] > box[:, 1]) & (box[:, 2] > box[:, 0])
            return self[keep]
        return self

    def area(self):
        """`(N,)` areas; xyxy boxes use the +1 widths."""
        box = self.bbox
        if self.mode == "xyxy":
            return (box[:, 2] - box[:, 0] + _TO_REMOVE) * (box[:, 3] - box[:, 1] + _TO_REMOVE)
        return box[:, 2] * box[:, 3]

    # --------------------------------------------------------- tensor-like
    def to(self, device):
        out = BoxList(self.bbox.to(device), self.size, self.mode)
        for key, value in self.extra_fields.items():
            if hasattr(value, "to"):
                value = value.to(device)
            out.add_field(key, value)
        return out

    def __getitem__(self, item):
        out = BoxList(self.bbox[item], self.size, self.mode)
        for key, value in self.extra_fields.items():
            out.add_field(key, value[item])
        return out

    def __len__(self):
        return self.bbox.shape[0]

    def __repr__(self):
        return "{}(num_boxes={}, image_width={}, image_height={}, mode={})".format(
            self.__class__.__name__, len(self), self.size[0], self.size[1], self.mode)

    @staticmethod
    def concate_box_list(list_of_boxes):
        """Concatenate BoxLists of the same image (all tensor fields of the first one are concatenated)."""
        first = list_of_boxes[0]
        out = BoxList(torch.cat([b.bbox for b in list_of_boxes], dim=0), first.size, first.mode)
        for key in first.fields():
            out.add_field(key, torch.cat([b.get_field(key) for b in list_of_boxes], dim=0))
        return out
