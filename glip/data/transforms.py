"""Image/target transforms of the GLIP data pipeline: multi-scale resize, flip, to-tensor, BGR-255 normalisation.

Each transform maps ``(image, target)`` to ``(image, target)``; ``target`` is a ``BoxList`` (or None) whose boxes
follow the image. ``build_transforms(cfg, is_train)`` reads the reference's yacs keys.
"""
import logging
import random
from typing import Optional, Sequence, Tuple

import torch
from torchvision.transforms import functional as F

from glip.structures.bounding_box import FLIP_LEFT_RIGHT

logger = logging.getLogger(__name__)


def swap_left_right(text: str) -> str:
    """Exchange the words "left" and "right" (substring replacement, as MDETR's flip does)."""
    return text.replace("left", "[TMP]").replace("right", "left").replace("[TMP]", "right")


class Caption:
    """A caption carried as a ``BoxList`` field through the geometric transforms.

    ``resize``/``crop`` keep it; ``transpose(FLIP_LEFT_RIGHT)`` swaps "left"/"right". Both words are single BERT
    tokens, so token-level positive maps built before the flip stay aligned (character spans do not).
    """

    def __init__(self, text: str):
        self.text = text

    def resize(self, *args, **kwargs) -> "Caption":
        return self

    def crop(self, *args, **kwargs) -> "Caption":
        return self

    def transpose(self, method: int) -> "Caption":
        return Caption(swap_left_right(self.text)) if method == FLIP_LEFT_RIGHT else self

    def to(self, *args, **kwargs) -> "Caption":
        return self

    def __repr__(self):
        return "Caption({!r})".format(self.text)


class Compose:
    """Apply transforms in order; returns only the image when called without a target."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target=None):
        for transform in self.transforms:
            image, target = transform(image, target)
        if target is None:
            return image
        return image, target

    def __repr__(self):
        inner = "".join("\n    {}".format(t) for t in self.transforms)
        return "{}({}\n)".format(self.__class__.__name__, inner)


class Resize:
    """Resize so the short side is ``min_size`` (random choice among several when training) capped by ``max_size``.

    ``get_size((w, h)) -> (h, w)``: if ``max/min * size > max_size`` then ``size = int(round(max_size * min / max))``;
    an image whose short side already equals ``size`` keeps its size; otherwise the long side becomes
    ``int(size * long / short)`` (truncation). ``restrict`` (INPUT.FIX_RES) returns ``(size, max_size)`` as is.
    Pixels are resized with torchvision's PIL bilinear resize; boxes with ``BoxList.resize``.
    """

    def __init__(self, min_size, max_size: Optional[int], restrict: bool = False):
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        self.min_size = tuple(min_size)
        self.max_size = max_size
        self.restrict = restrict

    def get_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        w, h = image_size
        size = random.choice(self.min_size)
        max_size = self.max_size
        if self.restrict:
            return size, max_size
        if max_size is not None:
            short, long = float(min(w, h)), float(max(w, h))
            if long / short * size > max_size:
                size = int(round(max_size * short / long))
        if (w <= h and w == size) or (h <= w and h == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)

    def __call__(self, image, target=None):
        image = F.resize(image, list(self.get_size(image.size)))
        if target is not None:
            target = target.resize(image.size)
        return image, target

    def __repr__(self):
        return "Resize(min_size={}, max_size={})".format(self.min_size, self.max_size)


class RandomHorizontalFlip:
    """Mirror the image with probability ``prob``; boxes via ``BoxList.transpose`` and a ``Caption`` field (if any)
    gets "left"/"right" swapped."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, image, target=None):
        if random.random() < self.prob:
            image = F.hflip(image)
            if target is not None:
                target = target.transpose(FLIP_LEFT_RIGHT)
        return image, target

    def __repr__(self):
        return "RandomHorizontalFlip(prob={})".format(self.prob)


class ToTensor:
    """PIL image -> float32 ``(3, H, W)`` RGB in [0, 1]."""

    def __call__(self, image, target=None):
        return F.to_tensor(image), target


class Normalize:
    """``format`` containing "bgr" reverses the channels, "255" rescales to 0-255; then ``(x - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], format: str = "rgb"):
        self.mean = list(mean)
        self.std = list(std)
        self.format = format.lower()

    def __call__(self, image: torch.Tensor, target=None):
        if "bgr" in self.format:
            image = image[[2, 1, 0]]
        if "255" in self.format:
            image = image * 255
        return F.normalize(image, mean=self.mean, std=self.std), target

    def __repr__(self):
        return "Normalize(format={!r})".format(self.format)


def build_transforms(cfg, is_train: bool = True) -> Compose:
    """Resize -> RandomHorizontalFlip -> ToTensor -> Normalize from the reference's config keys.

    Train: sizes ``AUGMENT.MULT_MIN_SIZE_TRAIN`` (if non-empty) else ``INPUT.MIN_SIZE_TRAIN``, ``INPUT.MAX_SIZE_TRAIN``,
    flip ``AUGMENT.FLIP_PROB_TRAIN``. Test: ``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST`` and no flip. Normalisation
    format ``INPUT.FORMAT`` if set, else "bgr255" when ``INPUT.TO_BGR255``.
    """
    if is_train:
        mult = tuple(cfg.AUGMENT.MULT_MIN_SIZE_TRAIN)
        min_size = mult if len(mult) > 0 else cfg.INPUT.MIN_SIZE_TRAIN
        max_size = cfg.INPUT.MAX_SIZE_TRAIN
        flip_prob = cfg.AUGMENT.FLIP_PROB_TRAIN
    else:
        min_size = cfg.INPUT.MIN_SIZE_TEST
        max_size = cfg.INPUT.MAX_SIZE_TEST
        flip_prob = 0.0
    input_format = cfg.INPUT.FORMAT if cfg.INPUT.FORMAT != "" else ("bgr255" if cfg.INPUT.TO_BGR255 else "rgb")
    return Compose([
        Resize(min_size, max_size, restrict=cfg.INPUT.FIX_RES),
        RandomHorizontalFlip(flip_prob),
        ToTensor(),
        Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, format=input_format),
    ])
