"""`ImageList`: a batch of differently sized images padded into one tensor, plus their true sizes."""
import math

import torch


class ImageList:
    """`tensors (B, C, H, W)` zero-padded batch; `image_sizes` list of the unpadded `(h, w)` per image."""

    def __init__(self, tensors, image_sizes):
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, *args, **kwargs):
        return ImageList(self.tensors.to(*args, **kwargs), self.image_sizes)


def to_image_list(tensors, size_divisible=0):
    """Batch images into an ImageList, zero-padding at the bottom/right.

    `tensors`: an ImageList (returned as is), a `(B, C, H, W)` tensor (kept as is unless `size_divisible > 0`),
    a single `(C, H, W)` tensor, or a list/tuple of `(C, H, W)` tensors. With `size_divisible > 0` the padded
    H and W are rounded up to a multiple of it.
    """
    if isinstance(tensors, ImageList):
        return tensors
    if isinstance(tensors, torch.Tensor):
        if tensors.dim() == 3:
            tensors = [tensors]
        elif tensors.dim() == 4:
            if size_divisible <= 0:
                return ImageList(tensors, [tuple(t.shape[-2:]) for t in tensors])
            tensors = list(tensors.unbind(0))
        else:
            raise ValueError("to_image_list expects a 3-D or 4-D tensor, got {}-D".format(tensors.dim()))
    if not isinstance(tensors, (list, tuple)):
        raise TypeError("Unsupported type for to_image_list: {}".format(type(tensors)))

    max_size = [max(s) for s in zip(*[img.shape for img in tensors])]
    if size_divisible > 0:
        max_size[1] = int(math.ceil(max_size[1] / size_divisible) * size_divisible)
        max_size[2] = int(math.ceil(max_size[2] / size_divisible) * size_divisible)
    batched = tensors[0].new_zeros((len(tensors),) + tuple(max_size))
    for img, pad_img in zip(tensors, batched):
        pad_img[: img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
    image_sizes = [tuple(img.shape[-2:]) for img in tensors]
    return ImageList(batched, image_sizes)
