"""FPN anchor generator (Detectron `generate_anchors` math) producing per-image, per-level anchor BoxLists.

Level l with stride s and size S has cell anchors centred on `(s - 1) / 2` with (rounded) sqrt-area S for each
aspect ratio; they are shifted to every feature-map location `(x * s, y * s)`, row-major over (y, x).
"""
import numpy as np
import torch
from torch import nn

from glip.structures.bounding_box import BoxList
from glip.structures.image_list import ImageList


class BufferList(nn.Module):
    """A list of persistent buffers registered as "0", "1", ... (state-dict keys `cell_anchors.N`)."""

    def __init__(self, buffers=None):
        super().__init__()
        if buffers is not None:
            self.extend(buffers)

    def extend(self, buffers):
        offset = len(self)
        for i, buffer in enumerate(buffers):
            self.register_buffer(str(offset + i), buffer)
        return self

    def __len__(self):
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())

    def __getitem__(self, idx):
        return list(self._buffers.values())[idx]


def _box_whctr(box):
    """Width, height (+1 convention) and centre of one xyxy box (float64 numpy)."""
    w = box[2] - box[0] + 1
    h = box[3] - box[1] + 1
    return w, h, box[0] + 0.5 * (w - 1), box[1] + 0.5 * (h - 1)


def _boxes_from_whctr(ws, hs, x_ctr, y_ctr):
    """`(K, 4)` xyxy boxes of widths `ws (K,)`, heights `hs (K,)` around one centre."""
    return np.stack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1),
                     x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)), axis=1)


def generate_anchors(stride=16, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)):
    """Cell anchors `(len(aspect_ratios) * len(sizes), 4)` float64 tensor, ratio-major, for one level.

    Starts from the window (0, 0, stride-1, stride-1); for each ratio r the window of the same area gets width
    `round(sqrt(area / r))` and height `round(width * r)`; each is then scaled by `size / stride`.
    """
    scales = np.array(sizes, dtype=np.float64) / stride
    ratios = np.array(aspect_ratios, dtype=np.float64)
    base = np.array([0.0, 0.0, stride - 1.0, stride - 1.0])
    w, h, x_ctr, y_ctr = _box_whctr(base)
    ws = np.round(np.sqrt(w * h / ratios))
    hs = np.round(ws * ratios)
    ratio_anchors = _boxes_from_whctr(ws, hs, x_ctr, y_ctr)
    out = []
    for anchor in ratio_anchors:
        aw, ah, ax, ay = _box_whctr(anchor)
        out.append(_boxes_from_whctr(aw * scales, ah * scales, ax, ay))
    return torch.from_numpy(np.vstack(out))


class AnchorGenerator(nn.Module):
    """Anchors for FPN levels.

    Args:
        sizes: per level a size or a tuple of sizes (e.g. with octave scales), e.g. (64, 128, 256, 512, 1024).
        aspect_ratios: h/w ratios shared by all levels.
        anchor_strides: per level stride, e.g. (8, 16, 32, 64, 128).
        straddle_thresh: anchors further than this outside the image get visibility False; < 0 disables.
    """

    def __init__(self, sizes=(128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0), anchor_strides=(8, 16, 32),
                 straddle_thresh=0):
        super().__init__()
        if len(anchor_strides) == 1:
            cell_anchors = [generate_anchors(anchor_strides[0], sizes, aspect_ratios).float()]
        else:
            if len(anchor_strides) != len(sizes):
                raise RuntimeError("FPN should have #anchor_strides == #sizes")
            cell_anchors = [
                generate_anchors(stride, size if isinstance(size, (tuple, list)) else (size,),
                                 aspect_ratios).float()
                for stride, size in zip(anchor_strides, sizes)
            ]
        self.strides = tuple(anchor_strides)
        self.cell_anchors = BufferList(cell_anchors)
        self.straddle_thresh = straddle_thresh

    def num_anchors_per_location(self):
        return [len(cell) for cell in self.cell_anchors]

    def grid_anchors(self, grid_sizes):
        """Per level `(H_l * W_l * A, 4)` xyxy anchors, location-major (y, x) then cell anchor."""
        anchors = []
        for (grid_h, grid_w), stride, base in zip(grid_sizes, self.strides, self.cell_anchors):
            device = base.device
            shifts_x = torch.arange(0, grid_w * stride, step=stride, dtype=torch.float32, device=device)
            shifts_y = torch.arange(0, grid_h * stride, step=stride, dtype=torch.float32, device=device)
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x = shift_x.reshape(-1)
            shift_y = shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def add_visibility_to(self, boxlist):
        """Field "visibility" (bool): anchor lies within the image up to `straddle_thresh`."""
        image_width, image_height = boxlist.size
        anchors = boxlist.bbox
        if self.straddle_thresh >= 0:
            inside = ((anchors[..., 0] >= -self.straddle_thresh)
                      & (anchors[..., 1] >= -self.straddle_thresh)
                      & (anchors[..., 2] < image_width + self.straddle_thresh)
                      & (anchors[..., 3] < image_height + self.straddle_thresh))
        else:
            inside = torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
        boxlist.add_field("visibility", inside)

    def forward(self, image_list, feature_maps):
        """Per image a list of per-level BoxLists (size = unpadded (w, h) of that image).

        `image_list`: an ImageList, or a `(B, C, H, W)` tensor (one entry for its full size);
        `feature_maps`: list of `(B, C, H_l, W_l)`.
        """
        grid_sizes = [fm.shape[-2:] for fm in feature_maps]
        per_level = self.grid_anchors(grid_sizes)
        if isinstance(image_list, ImageList):
            sizes_hw = list(image_list.image_sizes)
        else:
            sizes_hw = [tuple(int(x) for x in image_list.shape[-2:])]
        anchors = []
        for image_height, image_width in sizes_hw:
            in_image = []
            for level_anchors in per_level:
                boxlist = BoxList(level_anchors, (image_width, image_height), mode="xyxy")
                self.add_visibility_to(boxlist)
                in_image.append(boxlist)
            anchors.append(in_image)
        return anchors


def octave_anchor_sizes(anchor_sizes, octave, scales_per_octave):
    """Per level the tuple `size * octave ** (k / scales_per_octave)` for k < scales_per_octave."""
    return tuple(
        tuple(octave ** (k / float(scales_per_octave)) * size for k in range(scales_per_octave))
        for size in anchor_sizes
    )


def build_anchor_generator(cfg):
    """AnchorGenerator from cfg.MODEL.RPN (ANCHOR_SIZES, ASPECT_RATIOS, ANCHOR_STRIDE, STRADDLE_THRESH, OCTAVE,
    SCALES_PER_OCTAVE, USE_FPN), the reference's `make_anchor_generator_complex` used by ATSS/VLDyHead."""
    rpn = cfg.MODEL.RPN
    strides = tuple(rpn.ANCHOR_STRIDE)
    if rpn.USE_FPN:
        if len(strides) != len(rpn.ANCHOR_SIZES):
            raise ValueError("FPN needs len(ANCHOR_STRIDE) == len(ANCHOR_SIZES)")
        sizes = octave_anchor_sizes(rpn.ANCHOR_SIZES, rpn.OCTAVE, rpn.SCALES_PER_OCTAVE)
    else:
        if len(strides) != 1:
            raise ValueError("Non-FPN needs a single ANCHOR_STRIDE")
        sizes = tuple(rpn.ANCHOR_SIZES)
    return AnchorGenerator(sizes, tuple(rpn.ASPECT_RATIOS), strides, rpn.STRADDLE_THRESH)
