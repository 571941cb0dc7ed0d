"""Plain COCO-format detection dataset (the reference's ``COCODataset``), used for evaluation sets."""
import logging
import math
from typing import Optional

import torch

from glip.data.datasets.coco_base import CocoJsonBase, few_shot_ids
from glip.data.datasets.registry import register_dataset
from glip.structures.bounding_box import BoxList

logger = logging.getLogger(__name__)


@register_dataset("COCODataset", paths={"ann_file": "ann_file", "root": "img_dir"})
class COCODataset(CocoJsonBase):
    """Samples ``(image, BoxList with "labels", index)``; labels are contiguous ids (json ids sorted -> 1..K).

    ``remove_images_without_annotations`` (training) keeps only images with a usable box; at test time every image
    is kept and an image without annotations yields an empty target. Crowd boxes are ignored when
    ``ignore_crowd``; ``max_box > 0`` keeps the first ``max_box`` boxes in random order (as the reference); boxes are clipped to the image and
    empty ones removed (counted in ``box_stats``). ``override_category`` replaces the category names.
    ``sample_ratio`` (DATASETS.SAMPLE_RATIO) subsamples boxes after the transforms (>0 fraction, <0 count).
    """

    def __init__(self, ann_file: str, root: str, remove_images_without_annotations: bool = False, transforms=None,
                 ignore_crowd: bool = True, max_box: int = -1, few_shot: int = 0, override_category=None,
                 shuffle_seed: int = 0, class_agnostic: bool = False, sample_ratio: float = 0.0):
        super().__init__(root, ann_file, remove_images_without_annotations)
        if few_shot:
            self.ids = few_shot_ids(self.coco, self.ids, few_shot, shuffle_seed=shuffle_seed)
        if override_category is not None:
            self.coco.dataset["categories"] = override_category
            logger.info("override category: %s", override_category)
        self.json_category_id_to_contiguous_id = {v: i + 1 for i, v in enumerate(self.coco.getCatIds())}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}
        self.transforms = transforms
        self.ignore_crowd = ignore_crowd
        self.max_box = max_box
        self.class_agnostic = class_agnostic
        self.sample_ratio = sample_ratio

    def categories(self, no_background: bool = True) -> dict:
        """``{contiguous id: name}`` (entries named ``__background__`` or with id 0 skipped if ``no_background``)."""
        out = {}
        for cat in self.coco.dataset["categories"]:
            if not no_background or (cat["name"] != "__background__" and cat["id"] != 0):
                out[self.json_category_id_to_contiguous_id[cat["id"]]] = cat["name"]
        return out

    def __getitem__(self, idx: int):
        img, anno, image_id = self.load(idx)
        if self.ignore_crowd:
            anno = [obj for obj in anno if obj.get("iscrowd", 0) == 0]
        boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
        classes = torch.tensor([self.json_category_id_to_contiguous_id[obj["category_id"]] for obj in anno],
                               dtype=torch.int64)
        if self.max_box > 0 and len(boxes) > self.max_box:
            pick = torch.randperm(self.max_box)  # the reference permutes the first max_box boxes
            boxes, classes = boxes[pick], classes[pick]
        if self.class_agnostic:
            classes = torch.ones_like(classes)
        target = BoxList(boxes, img.size, mode="xywh").convert("xyxy")
        target.add_field("labels", classes)
        target = self.clip_boxes(target, image_id)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        if self.sample_ratio != 0.0:
            ratio = self.sample_ratio
            count = math.ceil(len(target) * ratio) if ratio > 0 else math.ceil(-ratio)
            target = target[torch.randperm(len(target))[:count]]
        return img, target, idx

    def get_raw_image(self, idx: int):
        return self.load(idx)[0]


def parse_override_category(value) -> Optional[list]:
    """DATASETS.OVERRIDE_CATEGORY arrives as a JSON string in the ODinW configs; lists pass through."""
    if value is None or isinstance(value, list):
        return value
    import json

    return json.loads(value)
