"""LVIS evaluation data (v1 minival / val json) as the reference's ``LvisDetection`` serves it."""
import logging
import os

from glip.data.datasets.coco_base import CocoJsonBase, load_image
from glip.data.datasets.registry import register_dataset
from glip.data.grounding_target import prepare_grounding_target

logger = logging.getLogger(__name__)


@register_dataset("LvisDetection", paths={"img_folder": "img_dir", "ann_file": "ann_file"})
class LvisDetection(CocoJsonBase):
    """Samples ``(image tensor, target dict, index)`` for LVIS evaluation.

    Every image of the json is kept (sorted ids). The file is ``img_folder`` joined with the last two parts of the
    record's ``coco_url`` (e.g. ``val2017/000000397133.jpg``), else its ``file_name``. The target dict holds
    ``boxes`` (xywh -> xyxy, +1 convention, clamped), ``labels`` (json category ids), ``image_id``, ``orig_size``
    ... (no tokens); the transforms see the image only. ``categories()`` maps json category id -> name.
    """

    evaluation_protocol = "lvis"

    def __init__(self, img_folder: str, ann_file: str, transforms=None):
        super().__init__(img_folder, ann_file, remove_images_without_annotations=False)
        self._transforms = transforms

    def image_path(self, img_id) -> str:
        record = self.coco.imgs[img_id]
        if "coco_url" in record:
            return os.path.join(self.root, *record["coco_url"].split("/")[-2:])
        return os.path.join(self.root, record["file_name"])

    def __getitem__(self, idx: int):
        img, anno, image_id = self.load(idx)
        target = prepare_grounding_target(img.size, anno, image_id, return_tokens=False, box_format="xywh")
        target.pop("keep")
        if self._transforms is not None:
            img = self._transforms(img)
        return img, target, idx

    def get_raw_image(self, idx: int):
        return load_image(self.image_path(self.ids[idx]))

    def categories(self) -> dict:
        return {cat["id"]: cat["name"] for cat in sorted(self.coco.dataset["categories"], key=lambda c: c["id"])}
