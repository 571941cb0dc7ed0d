"""MDETR-style grounding data: Flickr30k entities (separate/merged GT) and the mixed GoldG set (COCO + VG images).

Each json image record carries its ``caption``; each annotation a box (xywh) and ``tokens_positive`` character
spans into that caption (``tokens`` in some files). ``final_flickr_separateGT_*`` has one box per annotation,
``mergedGT`` one merged box per phrase: both load the same way.
"""
import logging
import os

from glip.data.datasets.coco_base import CocoJsonBase
from glip.data.datasets.registry import register_dataset
from glip.data.grounding_target import attach_fields, prepare_grounding_target
from glip.data.positive_map import MAX_QUERY_LEN, create_positive_map
from glip.data.transforms import Caption
from glip.structures.bounding_box import BoxList

logger = logging.getLogger(__name__)

_EXTRA_IMAGE_KEYS = ("sentence_id", "original_img_id", "original_id", "task_id")
_CATALOG_PATHS = {"img_folder": "img_folder", "ann_file": "ann_file"}


@register_dataset("ModulatedDataset", paths=_CATALOG_PATHS, values={"is_train": "is_train"})
class ModulatedDataset(CocoJsonBase):
    """Samples ``(image, BoxList, index)`` of caption-grounding json (the reference's ``ModulatedDataset``).

    Boxes ``x2 = x + w - 1`` clamped to the image; boxes with no extent are dropped with their spans. The whole
    caption is maskable (``greenlight`` span ``[0, len)``; ``no_mask_for_gold`` disables masking). Fields as
    :func:`prepare_grounding_target` plus ``dataset_name`` and the image record's ``sentence_id``,
    ``original_img_id``, ``original_id``, ``task_id`` when present; at test time ``positive_map_eval`` /
    ``nb_eval`` from ``tokens_positive_eval``. A horizontal flip keeps the caption (see ``Caption``).
    """

    def __init__(self, img_folder: str, ann_file: str, transforms=None, return_tokens: bool = True,
                 is_train: bool = False, tokenizer=None, disable_clip_to_image: bool = False,
                 no_mask_for_gold: bool = False, max_query_len: int = MAX_QUERY_LEN):
        super().__init__(img_folder, ann_file, remove_images_without_annotations=True)
        if tokenizer is None and return_tokens:
            from glip.data.positive_map import load_tokenizer

            tokenizer = load_tokenizer()
        self.tokenizer = tokenizer
        self._transforms = transforms
        self.return_tokens = return_tokens
        self.is_train = is_train
        self.disable_clip_to_image = disable_clip_to_image
        self.no_mask_for_gold = no_mask_for_gold
        self.max_query_len = max_query_len

    def __getitem__(self, idx: int):
        img, anno, image_id = self.load(idx)
        record = self.coco.imgs[image_id]
        caption = record["caption"]
        greenlight = [(0, len(caption))] + ([(-1, -1, -1)] if self.no_mask_for_gold else [])
        fields = prepare_grounding_target(
            img.size, anno, image_id, caption=caption, tokenizer=self.tokenizer, box_format="xywh",
            return_tokens=self.return_tokens, max_query_len=self.max_query_len, greenlight_spans=greenlight)
        target = BoxList(fields["boxes"].reshape(-1, 4), img.size, mode="xyxy")
        target.add_field("labels", fields["labels"])
        if not self.disable_clip_to_image:
            n_boxes = len(target)
            target = target.clip_to_image(remove_empty=True)
            if len(target) != n_boxes:
                raise RuntimeError("image {}: {} boxes removed by clipping in grounding data".format(
                    image_id, n_boxes - len(target)))
        target.add_field("caption", Caption(caption))
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        fields["caption"] = target.get_field("caption").text
        attach_fields(target, fields)
        target.add_field("dataset_name", record.get("dataset_name"))
        for key in _EXTRA_IMAGE_KEYS:
            if key in record:
                target.add_field(key, record[key])
        if "tokens_positive_eval" in record and not self.is_train:
            tokenized = self.tokenizer(caption, return_tensors="pt")
            target.add_field("positive_map_eval", create_positive_map(tokenized, record["tokens_positive_eval"]))
            target.add_field("nb_eval", len(target.get_field("positive_map_eval")))
        return img, target, idx

    def get_raw_image(self, idx: int):
        return self.load(idx)[0]


@register_dataset("FlickrDataset", paths=_CATALOG_PATHS, values={"is_train": "is_train"})
class FlickrDataset(ModulatedDataset):
    """Flickr30k entities (``flickr30k_train/val/test``; separate or merged GT json)."""

    evaluation_protocol = "flickr"


@register_dataset("MixedDataset", paths={"img_folder_coco": "coco_img_dir", "img_folder_vg": "vg_img_dir",
                                         "ann_file": "ann_file"})
class MixedDataset(ModulatedDataset):
    """GoldG mix (``mixed_train``, ``mixed_train_no_coco``): images come from ``img_folder_coco`` when the record's
    ``data_source`` is "coco", else from ``img_folder_vg`` (GQA/VG images). Other arguments as
    :class:`ModulatedDataset` (the catalog entries give no ``is_train``: test-time fields are computed)."""

    def __init__(self, img_folder_coco: str, img_folder_vg: str, ann_file: str, transforms=None,
                 return_tokens: bool = True, is_train: bool = False, tokenizer=None,
                 disable_clip_to_image: bool = False, no_mask_for_gold: bool = False,
                 max_query_len: int = MAX_QUERY_LEN):
        super().__init__(img_folder_coco, ann_file, transforms=transforms, return_tokens=return_tokens,
                         is_train=is_train, tokenizer=tokenizer, disable_clip_to_image=disable_clip_to_image,
                         no_mask_for_gold=no_mask_for_gold, max_query_len=max_query_len)
        self.root_coco = img_folder_coco
        self.root_vg = img_folder_vg

    def image_path(self, img_id) -> str:
        record = self.coco.imgs[img_id]
        root = self.root_coco if record.get("data_source") == "coco" else self.root_vg
        return os.path.join(root, record["file_name"])
