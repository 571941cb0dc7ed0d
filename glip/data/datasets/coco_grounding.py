"""COCO-format detection data served as grounding samples (the reference's ``CocoGrounding``).

Used for COCO (``coco_grounding_train``), ODinW and custom ``DATASETS.REGISTER`` entries with the ``_grounding``
suffix, and LVIS-as-grounding (``special_safeguard_for_coco_grounding``).
"""
import logging
import random
from typing import Optional, Sequence

import torch

from glip.data.datasets.coco_base import CocoJsonBase, few_shot_ids
from glip.data.datasets.registry import register_dataset
from glip.data.grounding_target import attach_fields, prepare_grounding_target
from glip.data.od_to_grounding import (
    check_for_positive_overflow,
    convert_od_to_grounding_simple,
    convert_od_to_grounding_with_negatives,
)
from glip.data.positive_map import MAX_QUERY_LEN
from glip.data.transforms import Caption
from glip.structures.bounding_box import BoxList

logger = logging.getLogger(__name__)


@register_dataset("CocoGrounding", paths={"img_folder": "img_dir", "ann_file": "ann_file"})
class CocoGrounding(CocoJsonBase):
    """Samples ``(image, BoxList, index)``; the BoxList carries ``labels`` and the grounding fields of
    :func:`glip.data.grounding_target.prepare_grounding_target` (``caption``, ``tokens_positive``, ``positive_map``
    (n, 256) normalised, ``greenlight_map``, ...).

    Images without a usable box are skipped (always, as the reference). Per sample: crowd boxes dropped, boxes
    clipped to the image and empty ones removed (``box_stats`` counts them; ``disable_clip_to_image`` skips this);
    then the caption:

    * default: every class name (``ind_to_class``, optionally ``override_category`` names) joined by
      ``separation_tokens``, shuffled unless ``disable_shuffle``; ``caption_prompt`` (with ``use_caption_prompt``)
      wraps each name in manual prefix/suffix text.
    * ``special_safeguard_for_coco_grounding`` (LVIS): positives limited to ``max_query_len - 2`` tokens (boxes of
      classes that do not fit are dropped), then negatives sampled (``random_sample_negative``) to fill the rest.

    The caption passes through the transforms as a :class:`Caption` field; a horizontal flip keeps it (as the
    reference) unless AUGMENT.FLIP_SWAP_LEFT_RIGHT, which exchanges the whole words "left"/"right" (spans follow).
    """

    def __init__(self, img_folder: str, ann_file: str, transforms=None, return_tokens: bool = True, tokenizer=None,
                 disable_shuffle: bool = False, add_detection_prompt: bool = False, one_hot: bool = False,
                 disable_clip_to_image: bool = False, no_minus_one_for_one_hot: bool = False,
                 separation_tokens: str = " ", few_shot: int = 0, no_mask_for_od: bool = False,
                 override_category=None, use_caption_prompt: bool = False,
                 caption_prompt: Optional[Sequence[dict]] = None, max_query_len: int = MAX_QUERY_LEN,
                 special_safeguard_for_coco_grounding: bool = False, random_sample_negative: int = -1,
                 rng: Optional[random.Random] = None):
        super().__init__(img_folder, ann_file, remove_images_without_annotations=True)
        if few_shot:
            self.ids = few_shot_ids(self.coco, self.ids, few_shot, category_slots=max(self.coco.cats.keys()))
        self.json_category_id_to_contiguous_id = {v: i + 1 for i, v in enumerate(self.coco.getCatIds())}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}
        if override_category is not None:
            self.coco.dataset["categories"] = override_category
        self.ind_to_class = self.categories(no_background=False)
        if tokenizer is None and return_tokens:
            from glip.data.positive_map import load_tokenizer

            tokenizer = load_tokenizer()
        self.tokenizer = tokenizer
        self._transforms = transforms
        self.return_tokens = return_tokens
        self.disable_shuffle = disable_shuffle
        self.add_detection_prompt = add_detection_prompt
        self.one_hot = one_hot
        self.no_minus_one_for_one_hot = no_minus_one_for_one_hot
        self.disable_clip_to_image = disable_clip_to_image
        self.separation_tokens = separation_tokens
        self.no_mask_for_od = no_mask_for_od
        self.use_caption_prompt = use_caption_prompt
        self.caption_prompt = caption_prompt
        self.max_query_len = max_query_len
        self.special_safeguard_for_coco_grounding = special_safeguard_for_coco_grounding
        self.random_sample_negative = random_sample_negative
        self.rng = rng or random

    def categories(self, no_background: bool = True) -> dict:
        """``{contiguous id: name}`` of the (possibly overridden) categories."""
        out = {}
        for cat in self.coco.dataset["categories"]:
            if not no_background or (cat["name"] != "__background__" and cat["id"] != 0):
                out[self.json_category_id_to_contiguous_id[cat["id"]]] = cat["name"]
        return out

    def _caption(self, labels):
        if self.special_safeguard_for_coco_grounding:
            if self.use_caption_prompt:
                raise ValueError("CAPTION_PROMPT cannot be combined with SPECIAL_SAFEGUARD_FOR_COCO_GROUNDING")
            keep, length = check_for_positive_overflow(labels, self.ind_to_class, self.tokenizer,
                                                       self.max_query_len - 2, rng=self.rng)
            labels = [labels[i] for i in keep]
            result = convert_od_to_grounding_with_negatives(
                labels, self.ind_to_class, self.tokenizer, disable_shuffle=self.disable_shuffle,
                random_sample_negative=self.random_sample_negative, control_probabilities=(0.0, 0.0, 1.0, 0.0),
                separation_tokens=self.separation_tokens, max_seq_length=self.max_query_len - 2,
                positive_caption_length=length, rng=self.rng)
            return keep, result
        result = convert_od_to_grounding_simple(
            labels, self.ind_to_class, disable_shuffle=self.disable_shuffle,
            add_detection_prompt=self.add_detection_prompt, separation_tokens=self.separation_tokens,
            caption_prompt=self.caption_prompt if self.use_caption_prompt else None, rng=self.rng)
        return list(range(len(labels))), result

    def __getitem__(self, idx: int):
        img, anno, image_id = self.load(idx)
        anno = [obj for obj in anno if obj.get("iscrowd", 0) == 0]
        boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, img.size, mode="xywh").convert("xyxy")
        classes = [self.json_category_id_to_contiguous_id[obj["category_id"]] for obj in anno]
        target.add_field("labels", torch.tensor(classes, dtype=torch.int64))
        if not self.disable_clip_to_image:
            target = self.clip_boxes(target, image_id)

        labels = target.get_field("labels").tolist()
        keep, (tokens_positive, caption, greenlight, _) = self._caption(labels)
        if len(keep) < len(labels):
            logger.warning("image %s: removed %d boxes due to positive caption overflow", image_id,
                           len(labels) - len(keep))
        target = target[torch.as_tensor(keep, dtype=torch.long)]
        spans = tokens_positive  # aligned with the kept boxes
        in_caption = [i for i, s in enumerate(spans) if s is not None]
        target = target[torch.as_tensor(in_caption, dtype=torch.long)]
        od_label = self.special_safeguard_for_coco_grounding  # only that path records it (else -10, as reference)
        annotations = [{"bbox": b, "category_id": int(c), "area": float(a), "iscrowd": 0,
                        "tokens_positive": spans[i], "original_od_label": int(c) if od_label else -10}
                       for i, b, c, a in zip(in_caption, target.bbox.tolist(), target.get_field("labels").tolist(),
                                             target.area().tolist())]
        if self.no_mask_for_od:
            greenlight = list(greenlight) + [(-1, -1, -1)]
        fields = prepare_grounding_target(
            img.size, annotations, image_id, caption=caption, tokenizer=self.tokenizer, box_format="xyxy",
            return_tokens=self.return_tokens, max_query_len=self.max_query_len, greenlight_spans=greenlight)
        target = target[fields["keep"]]
        if self.one_hot:
            fields.update(self._one_hot(fields["positive_map"], target.get_field("labels")))

        target.add_field("caption", Caption(caption))
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        fields["caption"] = target.get_field("caption").text
        attach_fields(target, fields)
        if len(target.bbox) != len(fields["boxes"]):
            raise RuntimeError("image {}: box count mismatch after processing".format(image_id))
        return img, target, idx

    def _one_hot(self, positive_map, labels):
        """Equivalence-check mode: the positive map is the one-hot class (column ``label - 1`` or ``label``)."""
        one_hot = torch.zeros_like(positive_map)
        text_mask = torch.zeros(positive_map.shape[1], dtype=torch.int64)
        offset = 0 if self.no_minus_one_for_one_hot else 1
        for row, label in enumerate(labels.tolist()):
            one_hot[row, label - offset] = 1.0
        if self.no_minus_one_for_one_hot:
            text_mask[:] = 1
        else:
            text_mask[: len(self.ind_to_class)] = 1
        return {"positive_map": one_hot, "text_mask": text_mask}

    def get_raw_image(self, idx: int):
        return self.load(idx)[0]
