"""Image/target transforms of the GLIP data pipeline: multi-scale resize, flip, to-tensor, BGR-255 normalisation.

Each transform maps ``(image, target)`` to ``(image, target)``; ``target`` is a ``BoxList`` (or None) whose boxes
follow the image. ``build_transforms(cfg, is_train)`` reads the reference's yacs keys.
"""
import logging
import random
import re
import unicodedata
from typing import List, Optional, Sequence, Tuple

import torch
from torchvision.transforms import functional as F

from glip.structures.bounding_box import FLIP_LEFT_RIGHT

logger = logging.getLogger(__name__)

Edit = Tuple[int, int, int, int]


_LEFT_RIGHT = re.compile("left|right", re.IGNORECASE)


def _is_word_boundary(char: str) -> bool:
    """Whitespace or punctuation (ASCII symbols, Unicode P*): where a WordPiece tokenizer starts a new word."""
    return char.isspace() or (ord(char) < 128 and not char.isalnum()) or unicodedata.category(char).startswith("P")


def _swapped_word(word: str) -> str:
    """ "left" <-> "right", keeping the capitalisation ("Left" -> "Right", "LEFT" -> "RIGHT")."""
    other = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_left_right_words(text: str) -> Tuple[str, List[Edit]]:
    """Exchange the whole words "left" and "right" (case-insensitive, capitalisation kept).

    A whole word is delimited by the text's ends, whitespace or punctuation, so "left-hand" becomes "right-hand"
    while "bright", "upright", "leftover" and "myleft" stay. Returns the new text and the edits
    ``(old_begin, old_end, new_begin, new_end)`` of the replaced words, in order.
    """
    pieces, edits, last, shift = [], [], 0, 0
    for match in _LEFT_RIGHT.finditer(text):
        beg, end = match.span()
        before_ok = beg == 0 or _is_word_boundary(text[beg - 1])
        if not (before_ok and (end == len(text) or _is_word_boundary(text[end]))):
            continue
        word = _swapped_word(match.group())
        pieces.extend([text[last:beg], word])
        edits.append((beg, end, beg + shift, beg + shift + len(word)))
        shift += len(word) - (end - beg)
        last = end
    pieces.append(text[last:])
    return "".join(pieces), edits


def move_position(position: int, edits: Sequence[Edit], is_end: bool = False) -> int:
    """A character offset of the text before ``edits`` (as ``swap_left_right_words`` returns them) in the text
    after them; an offset inside a replaced word goes to the new word's start (or its end, ``is_end``)."""
    shift = 0
    for old_beg, old_end, new_beg, new_end in edits:
        if position < old_beg or (position == old_beg and not is_end):
            break
        if position < old_end or (position == old_end and is_end):
            return new_end if is_end and position > old_beg else new_beg
        shift = new_end - old_end
    return position + shift


def _same_token_layout(tokenizer, old: str, new: str, edits: Sequence[Edit]) -> bool:
    """Whether every replaced word has as many tokens as the original and the texts as many tokens in all."""
    for old_beg, old_end, new_beg, new_end in edits:
        if len(tokenizer.tokenize(old[old_beg:old_end])) != len(tokenizer.tokenize(new[new_beg:new_end])):
            return False
    return len(tokenizer.tokenize(old)) == len(tokenizer.tokenize(new))


class Caption:
    """A caption carried as a ``BoxList`` field through the geometric transforms.

    ``resize``/``crop``/``transpose`` keep it unchanged, as the reference (which never edits the caption on a
    flip). ``swap_left_right`` gives the caption with the words "left"/"right" exchanged (the project option
    AUGMENT.FLIP_SWAP_LEFT_RIGHT); ``edits`` holds, per swap since the dataset made the caption, the replaced
    words, so character spans can follow (``move_span``, applied by ``glip.data.grounding_target.attach_fields``).
    """

    def __init__(self, text: str, edits: Sequence[Sequence[Edit]] = ()):
        self.text = text
        self.edits = tuple(tuple(step) for step in edits)

    def resize(self, *args, **kwargs) -> "Caption":
        return self

    def crop(self, *args, **kwargs) -> "Caption":
        return self

    def transpose(self, method: int) -> "Caption":
        return self

    def to(self, *args, **kwargs) -> "Caption":
        return self

    def swap_left_right(self, tokenizer=None) -> "Caption":
        """The caption with the whole words "left"/"right" exchanged.

        With a ``tokenizer``, a swap that would change the tokens around it (a swapped word with another number
        of tokens than the original, e.g. a vocabulary without "right" as one token) is not made and the caption is
        returned unchanged, so token-level maps built on the caption (positive map, MLM greenlight map) stay on
        their words.
        """
        text, edits = swap_left_right_words(self.text)
        if not edits:
            return self
        if tokenizer is not None and not _same_token_layout(tokenizer, self.text, text, edits):
            logger.debug("left/right swap would change the tokenization of %r; caption kept", self.text)
            return self
        return Caption(text, self.edits + (tuple(edits),))

    def move_span(self, begin: int, end: int) -> Tuple[int, int]:
        """The character span ``[begin, end)`` of the original caption in this one."""
        for step in self.edits:
            begin, end = move_position(begin, step), move_position(end, step, is_end=True)
        return begin, end

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
    """Mirror the image with probability ``prob``; boxes via ``BoxList.transpose``. The caption is unchanged (as
    the reference) unless ``swap_left_right`` (AUGMENT.FLIP_SWAP_LEFT_RIGHT): then a ``Caption`` field gets the
    whole words "left"/"right" exchanged (``Caption.swap_left_right``, checked with ``tokenizer`` if given)."""

    def __init__(self, prob: float = 0.5, swap_left_right: bool = False, tokenizer=None):
        self.prob = prob
        self.swap_left_right = swap_left_right
        self.tokenizer = tokenizer

    def __call__(self, image, target=None):
        if random.random() < self.prob:
            image = F.hflip(image)
            if target is not None:
                target = target.transpose(FLIP_LEFT_RIGHT)
                caption = target.get_field("caption") if target.has_field("caption") else None
                if self.swap_left_right and isinstance(caption, Caption):
                    target.add_field("caption", caption.swap_left_right(self.tokenizer))
        return image, target

    def __repr__(self):
        return "RandomHorizontalFlip(prob={}, swap_left_right={})".format(self.prob, self.swap_left_right)


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
    flip ``AUGMENT.FLIP_PROB_TRAIN`` (captions edited only with the project key ``AUGMENT.FLIP_SWAP_LEFT_RIGHT``,
    checked with ``MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE``'s tokenizer). Test: ``INPUT.MIN_SIZE_TEST``/
    ``MAX_SIZE_TEST`` and no flip. Normalisation format ``INPUT.FORMAT`` if set, else "bgr255" when
    ``INPUT.TO_BGR255``.
    """
    if is_train:
        mult = tuple(cfg.AUGMENT.MULT_MIN_SIZE_TRAIN)
        min_size = mult if len(mult) > 0 else cfg.INPUT.MIN_SIZE_TRAIN
        max_size = cfg.INPUT.MAX_SIZE_TRAIN
        flip_prob = cfg.AUGMENT.FLIP_PROB_TRAIN
        swap = bool(cfg.AUGMENT.get("FLIP_SWAP_LEFT_RIGHT", False))
    else:
        min_size = cfg.INPUT.MIN_SIZE_TEST
        max_size = cfg.INPUT.MAX_SIZE_TEST
        flip_prob = 0.0
        swap = False
    tokenizer = None
    if swap and flip_prob > 0:
        from glip.data.positive_map import load_tokenizer

        tokenizer = load_tokenizer(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    input_format = cfg.INPUT.FORMAT if cfg.INPUT.FORMAT != "" else ("bgr255" if cfg.INPUT.TO_BGR255 else "rgb")
    return Compose([
        Resize(min_size, max_size, restrict=cfg.INPUT.FIX_RES),
        RandomHorizontalFlip(flip_prob, swap_left_right=swap, tokenizer=tokenizer),
        ToTensor(),
        Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, format=input_format),
    ])
