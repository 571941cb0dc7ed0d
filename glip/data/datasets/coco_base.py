"""Shared pieces of the COCO-json datasets: annotation loading, image filtering, few-shot subsets, image reading."""
import contextlib
import io
import logging
import os
import random
from typing import List, Optional, Tuple

import torch
from PIL import Image

logger = logging.getLogger(__name__)


def has_valid_annotation(anno: List[dict]) -> bool:
    """An image is usable for training if it has at least one box wider and taller than 1 pixel."""
    if len(anno) == 0:
        return False
    if all(any(o <= 1 for o in obj["bbox"][2:]) for obj in anno):
        return False
    return True


def load_image(path: str) -> Image.Image:
    """RGB PIL image; a missing or unreadable file raises an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError("image file not found: {}".format(path))
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except OSError as exc:
        raise OSError("cannot read image {}: {}".format(path, exc)) from exc


def load_coco(ann_file: str):
    """pycocotools ``COCO`` of ``ann_file`` (its progress prints go to the debug log)."""
    from pycocotools.coco import COCO

    if not os.path.isfile(ann_file):
        raise FileNotFoundError("annotation file not found: {}".format(ann_file))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco = COCO(ann_file)
    logger.debug(buffer.getvalue().strip())
    return coco


def few_shot_ids(coco, ids: List, shots: int, category_slots: Optional[int] = None,
                 shuffle_seed: int = 0) -> List:
    """Greedy few-shot subset: walk the images (shuffled with ``shuffle_seed`` if non-zero) and keep one if any of
    its categories still needs examples; each kept image uses one slot of each of its categories.

    ``category_slots`` is the length of the per-category counter indexed by ``category_id - 1`` (COCODataset uses
    the number of categories, CocoGrounding the largest category id).
    """
    ids = list(ids)
    if shuffle_seed != 0:
        random.Random(shuffle_seed).shuffle(ids)
        logger.info("few-shot selection shuffled with seed %d", shuffle_seed)
    slots = category_slots if category_slots is not None else len(coco.cats)
    remaining = [shots] * slots
    chosen = []
    for img_id in ids:
        cats = {ann["category_id"] for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None))}
        if any(remaining[c - 1] > 0 for c in cats):
            chosen.append(img_id)
            for c in cats:
                remaining[c - 1] -= 1
    return chosen


class CocoJsonBase(torch.utils.data.Dataset):
    """Images and annotations of a COCO-format json (``ids`` sorted, optionally only images with valid boxes).

    Subclasses turn ``load(idx) -> (PIL image, annotation dicts, image_id)`` into samples.
    """

    evaluation_protocol = "coco"

    def __init__(self, img_folder: str, ann_file: str, remove_images_without_annotations: bool = True):
        self.root = img_folder
        self.ann_file = ann_file
        self.coco = load_coco(ann_file)
        self.ids = sorted(self.coco.imgs.keys())
        if remove_images_without_annotations:
            self.ids = [i for i in self.ids if has_valid_annotation(self._annotations(i))]
        self.box_stats = {"clipped": 0, "removed": 0}

    def _annotations(self, img_id) -> List[dict]:
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=[img_id], iscrowd=None))

    def image_path(self, img_id) -> str:
        return os.path.join(self.root, self.coco.imgs[img_id]["file_name"])

    def load(self, idx: int) -> Tuple[Image.Image, List[dict], object]:
        img_id = self.ids[idx]
        return load_image(self.image_path(img_id)), self._annotations(img_id), img_id

    @property
    def id_to_img_map(self):
        return dict(enumerate(self.ids))

    def get_img_info(self, index: int) -> dict:
        """The json image record (``height``, ``width``, ``file_name``, ...) of sample ``index``."""
        return self.coco.imgs[self.ids[index]]

    def __len__(self):
        return len(self.ids)

    def clip_boxes(self, target, image_id):
        """``clip_to_image(remove_empty=True)`` with counts of clipped and removed boxes (logged, accumulated)."""
        before = target.bbox.clone()
        clipped = target.clip_to_image(remove_empty=False)
        changed = (clipped.bbox != before).any(dim=1)
        keep = (clipped.bbox[:, 3] > clipped.bbox[:, 1]) & (clipped.bbox[:, 2] > clipped.bbox[:, 0])
        n_removed = int((~keep).sum())
        n_clipped = int((changed & keep).sum())
        self.box_stats["clipped"] += n_clipped
        self.box_stats["removed"] += n_removed
        if n_removed or n_clipped:
            logger.debug("image %s: %d boxes clipped to the image, %d empty boxes removed", image_id, n_clipped,
                         n_removed)
        return clipped[keep]
