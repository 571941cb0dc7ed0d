"""Batch collation: samples ``(image (3, H, W), target BoxList, index)`` -> padded images plus stacked maps."""
from typing import List, Optional

import torch

from glip.structures.image_list import to_image_list


def _stack_box_maps(targets, field: str) -> Optional[torch.Tensor]:
    """Concatenate the per-image ``(n_i, L_i)`` maps into one binary float ``(sum n_i, max L_i)``."""
    if not targets[0].has_field(field):
        return None
    maps = [t.get_field(field) for t in targets]
    width = max(m.shape[1] for m in maps)
    out = torch.zeros((sum(m.shape[0] for m in maps), width), dtype=torch.bool)
    row = 0
    for m in maps:
        out[row: row + m.shape[0], : m.shape[1]] = m.bool()
        row += m.shape[0]
    return out.float()


class BatchCollator:
    """Reference batching: ``(images ImageList, targets tuple, ids tuple, positive_map, positive_map_eval,
    greenlight_map)``.

    ``positive_map`` is the row concatenation of every target's ``positive_map`` made binary (``bool().float()``,
    shape ``(total_boxes, 256)``); ``positive_map_eval`` likewise; ``greenlight_map`` is ``(B, 256)`` stacked.
    Absent fields give None. Dict targets (no BoxList) return the first five entries only, as the reference.
    """

    def __init__(self, size_divisible: int = 0):
        self.size_divisible = size_divisible

    def __call__(self, batch: List[tuple]):
        columns = list(zip(*batch))
        images = to_image_list(columns[0], self.size_divisible)
        targets, ids = columns[1], columns[2]
        if isinstance(targets[0], dict):
            return images, targets, ids, None, None
        greenlight_map = None
        if targets[0].has_field("greenlight_map"):
            greenlight_map = torch.stack([t.get_field("greenlight_map") for t in targets], dim=0)
        positive_map = _stack_box_maps(targets, "positive_map")
        positive_map_eval = _stack_box_maps(targets, "positive_map_eval")
        return images, targets, ids, positive_map, positive_map_eval, greenlight_map


class UntransformedImages(tuple):
    """The images of a test-time-augmentation batch, as the dataset returned them (PIL, no transforms).

    `to(device)` returns them unchanged: each augmented view is transformed, batched and moved later
    (`glip.engine.tta`)."""

    def to(self, *args, **kwargs) -> "UntransformedImages":
        return self


class BBoxAugCollator:
    """Test-time augmentation batching (TEST.USE_MULTISCALE): ``(UntransformedImages, targets, ids, None, None)``;
    the images are batched later, once per augmented view."""

    def __call__(self, batch: List[tuple]):
        columns = list(zip(*batch))
        return UntransformedImages(columns[0]), columns[1], columns[2], None, None
