"""Batch collation: samples ``(image (3, H, W), target BoxList, index)`` -> a :class:`Batch` of padded images and
stacked maps."""
from typing import List, NamedTuple, Optional, Sequence, Union

import torch

from glip.structures.image_list import ImageList, to_image_list


class Batch(NamedTuple):
    """One loader batch, read by name (``batch.images``, ``batch.positive_map``).

    ``images``: the padded ``ImageList`` ``(B, 3, H, W)`` (test-time augmentation: the tuple of unbatched image
    tensors). ``targets``: the ``B`` targets (BoxLists, or dicts for the reference's dict datasets).
    ``indices``: the ``B`` dataset indices. ``positive_map``: the token targets, every target's
    ``"positive_map"`` field concatenated by rows and made binary, ``(sum of boxes, 256)`` float (see
    ``glip.data.positive_map``). ``positive_map_eval``: the same for the ``"positive_map_eval"`` field
    (grounding evaluation). ``greenlight_map``: the targets' ``(256,)`` maps stacked to ``(B, 256)``.
    Fields the targets do not carry are None. A tuple, so the reference's positional reading still works.
    """

    images: Union[ImageList, tuple]
    targets: tuple
    indices: tuple
    positive_map: Optional[torch.Tensor] = None
    positive_map_eval: Optional[torch.Tensor] = None
    greenlight_map: Optional[torch.Tensor] = None


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


def _stack_greenlight(targets: Sequence) -> Optional[torch.Tensor]:
    if not targets[0].has_field("greenlight_map"):
        return None
    return torch.stack([t.get_field("greenlight_map") for t in targets], dim=0)


class BatchCollator:
    """Reference batching into a :class:`Batch`: images padded to a multiple of ``size_divisible``, the targets'
    ``positive_map`` / ``positive_map_eval`` fields concatenated and made binary (``bool().float()``), their
    ``greenlight_map`` stacked. Dict targets (no BoxList) give no maps, as the reference.
    """

    def __init__(self, size_divisible: int = 0):
        self.size_divisible = size_divisible

    def __call__(self, batch: List[tuple]) -> Batch:
        columns = list(zip(*batch))
        images = to_image_list(columns[0], self.size_divisible)
        targets, indices = columns[1], columns[2]
        if isinstance(targets[0], dict):
            return Batch(images, targets, indices)
        return Batch(images, targets, indices, positive_map=_stack_box_maps(targets, "positive_map"),
                     positive_map_eval=_stack_box_maps(targets, "positive_map_eval"),
                     greenlight_map=_stack_greenlight(targets))


class BBoxAugCollator:
    """Test-time augmentation batching: a :class:`Batch` whose ``images`` stay a tuple of image tensors (batched
    later, per augmentation); no maps."""

    def __call__(self, batch: List[tuple]) -> Batch:
        columns = list(zip(*batch))
        return Batch(columns[0], columns[1], columns[2])


__all__ = ["Batch", "BatchCollator", "BBoxAugCollator"]
