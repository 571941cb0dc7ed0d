"""Caption data: image-text pairs with (pseudo-)labelled boxes in the reference's TSV layout (``CaptionTSV``,
``PseudoData``), the data of GLIP's scaled-up recipes (Cap4M / Cap24M).

A dataset yaml names its files relative to its own folder: ``img`` (rows ``key \\t base64 image``), ``label``
(rows ``key \\t json``, see ``glip.data.caption_rules``), optional ``hw`` (rows ``key \\t [{"height", "width"}]``
or ``key \\t "h w"``), ``linelist`` (row numbers, one per line: selects / repeats rows) and ``imageid2idx`` (json
``{img_id: image row}``; the label json then names its image by ``img_id``). An optional
``caption_format_version`` entry (written by ``tools/pseudo_label.py``) must match the configured version.

A sample is ``(image, BoxList, index)`` as for the other grounding data: boxes xyxy, fields ``labels`` (all 1),
``caption``, ``tokens_positive``, ``positive_map``, ``greenlight_map`` (MLM-maskable tokens), ...

Where the reference draws another random row (fewer than ``caption_min_box`` boxes, before or after screening)
this does too; a malformed row (bad json or image, missing keys, lengths that differ, spans outside the caption)
is logged and counted (``skipped``) and another row drawn, instead of the reference's silent bare ``except``.
"""
import json
import logging
import os.path as op
import random
from collections import Counter
from typing import List, Optional

import torch
import yaml

from glip.data.caption_rules import (
    FORMAT_VERSIONS,
    BadRowError,
    check_caption,
    inference_caption,
    negative_pack_number,
    pack_caption,
    parse_label,
    read_boxes,
    screen_boxes,
)
from glip.data.datasets.registry import register_dataset
from glip.data.datasets.tsv import TSVFile, img_from_base64
from glip.data.grounding_target import attach_fields, prepare_grounding_target
from glip.data.positive_map import MAX_QUERY_LEN
from glip.data.transforms import Caption
from glip.structures.bounding_box import BoxList

logger = logging.getLogger(__name__)

MAX_REDRAWS = 100  # consecutive rows drawn for one sample before giving up with an error
_WARN_FIRST = 10   # bad rows logged one by one; then every _WARN_EVERY-th


def _in_yaml(name: Optional[str], root: str) -> Optional[str]:
    if name is None:
        return None
    for candidate in (name, op.join(root, name)):
        if op.isfile(candidate):
            return candidate
    raise FileNotFoundError("file named in the caption yaml not found: {}".format(op.join(root, name)))


class CaptionRows:
    """Random access to the rows of a caption dataset yaml (the reference's ``TSVYamlDataset``)."""

    def __init__(self, yaml_file: str, replace_clean_label: bool = False):
        if not op.isfile(yaml_file):
            raise FileNotFoundError("caption dataset yaml not found: {}".format(yaml_file))
        with open(yaml_file) as f:
            self.cfg = yaml.safe_load(f) or {}
        if "img" not in self.cfg:
            raise ValueError("caption dataset yaml {} names no 'img' TSV".format(yaml_file))
        self.yaml_file = yaml_file
        root = op.dirname(yaml_file)
        label = _in_yaml(self.cfg.get("label"), root)
        if replace_clean_label:
            if label is None or "raw_label" not in label:
                raise ValueError("DATASETS.REPLACE_CLEAN_LABEL needs a label file whose path contains 'raw_label', "
                                 "got {}".format(label))
            label = _in_yaml(label.replace("raw_label", "clean_label"), root)
        self.img_tsv = TSVFile(_in_yaml(self.cfg["img"], root))
        self.label_tsv = TSVFile(label) if label else None
        hw = _in_yaml(self.cfg.get("hw"), root)
        self.hw_tsv = TSVFile(hw) if hw else None
        self.line_list = None
        linelist = _in_yaml(self.cfg.get("linelist"), root)
        if linelist:
            with open(linelist) as f:
                self.line_list = [int(line.strip()) for line in f if line.strip()]
        self.imageid2idx = None
        imageid2idx = _in_yaml(self.cfg.get("imageid2idx"), root)
        if imageid2idx:
            if self.label_tsv is None:
                raise ValueError("caption dataset yaml {}: imageid2idx needs a label TSV".format(yaml_file))
            with open(imageid2idx) as f:
                self.imageid2idx = json.load(f)

    def __len__(self):
        if self.line_list is not None:
            return len(self.line_list)
        return len(self.label_tsv if self.imageid2idx is not None else self.img_tsv)

    def line_no(self, idx: int) -> int:
        return idx if self.line_list is None else self.line_list[idx]

    def label_row(self, idx: int):
        """The parsed label json of sample ``idx`` ([] without a label TSV); BadRowError if not json."""
        if self.label_tsv is None:
            return []
        row = self.label_tsv.seek(self.line_no(idx))
        if len(row) < 2:
            raise BadRowError("label row {} has no json column".format(self.line_no(idx)))
        return parse_label(row[1])

    def image(self, idx: int):
        """The PIL RGB image of sample ``idx``; BadRowError when it cannot be decoded."""
        line = self.line_no(idx)
        if self.imageid2idx is not None:
            anno = self.label_row(idx)
            if not isinstance(anno, dict) or anno.get("img_id") not in self.imageid2idx:
                raise BadRowError("label row {} names no img_id of the imageid2idx file".format(line))
            line = self.imageid2idx[anno["img_id"]]
        row = self.img_tsv.seek(line)
        try:
            return img_from_base64(row[-1])
        except Exception as exc:  # PIL raises several types for undecodable bytes
            raise BadRowError("image row {} ({}) cannot be decoded: {}".format(line, row[0], exc)) from exc

    def key(self, idx: int) -> str:
        """The row key (of the label TSV when there is one)."""
        return (self.label_tsv or self.img_tsv).seek(self.line_no(idx))[0]

    def hw(self, idx: int) -> Optional[dict]:
        """``{"height", "width"}`` from the hw TSV, else from the label json's ``img_h`` / ``img_w``, else None."""
        if self.hw_tsv is not None:
            value = self.hw_tsv.seek(self.line_no(idx))[1]
            try:
                data = json.loads(value)
                return data[0] if isinstance(data, list) else data
            except ValueError:
                h, w = value.split(" ")
                return {"height": int(h), "width": int(w)}
        try:
            anno = self.label_row(idx)
        except BadRowError:
            return None
        if isinstance(anno, dict) and "img_h" in anno and "img_w" in anno:
            return {"height": int(anno["img_h"]), "width": int(anno["img_w"])}
        return None


def _frame(anno: dict, image_size) -> tuple:
    """The ``(img_w, img_h)`` pixel frame of the row's boxes (the decoded image's size when absent)."""
    if "img_w" not in anno or "img_h" not in anno:
        return image_size
    try:
        frame = (int(anno["img_w"]), int(anno["img_h"]))
    except (TypeError, ValueError) as exc:
        raise BadRowError("img_w / img_h are not integers: {!r} / {!r}".format(anno["img_w"], anno["img_h"])) from exc
    if min(frame) <= 0:
        raise BadRowError("img_w / img_h must be positive, got {}".format(frame))
    return frame


def _check_spans(caption: str, tokens) -> None:
    for spans in tokens:
        for beg, end in spans:
            if not 0 <= beg < end <= len(caption):
                raise BadRowError("span [{}, {}] is outside the caption (length {})".format(beg, end, len(caption)))


@register_dataset("CaptionTSV", paths={"yaml_file": "yaml_file"})
class CaptionTSV(torch.utils.data.Dataset):
    """Pseudo-labelled caption data (the reference's ``CaptionTSV``); samples ``(image, BoxList, index)``.

    Per row (options are the config keys of ``glip.data.dataset_options``):

    1. fewer than ``caption_min_box`` entries in ``bboxes`` (boxes in v1, entities in v2, as the reference
       counts before flattening): another row;
    2. ``caption_format_version`` "v2": flattened (``flatten_v2``);
    3. ``further_screen``: ``score > caption_conf``, then (another row if fewer than ``caption_min_box`` remain)
       NMS at ``caption_nms`` when > 0 over all boxes of the row (``screen_boxes``);
    4. fewer than ``caption_min_box`` boxes: another row; boxes (in the ``img_w`` x ``img_h`` frame of the label,
       the decoded image's size when absent) clipped to it, empty ones removed with their spans;
    5. with probability ``sample_negative_for_grounding_data`` (-1: never) the caption is replaced by a random
       row's and the sample has no box (the reference asserted here);
    6. ``pack_random_caption_number`` > 0: ``negative_pack_number`` random rows' captions packed around it
       (``pack_caption``, ``safeguard_positive_caption`` keeps within ``max_query_len`` tokens);
    7. MLM span: the positive caption when ``mlm_obj_for_only_positive`` and packing, else the whole caption.

    ``inference_caption``: rows hold only captions (``glip.data.caption_rules.inference_caption``); samples have
    no box (the reference recursed without end). ``rng`` draws rows, negatives and packing (default ``random``).
    """

    unpacked = False  # PseudoData: no first entry count, no negatives or packing, whole caption maskable

    def __init__(self, yaml_file: str, transforms=None, return_tokens: bool = True, tokenizer=None,
                 caption_min_box: int = 1, replace_clean_label: bool = False, further_screen: bool = False,
                 caption_conf: float = 0.5, caption_nms: float = -1, pack_random_caption_number: int = 0,
                 inference_caption: bool = False, sample_negative_for_grounding_data: float = -1,
                 random_pack_prob: float = -1.0, no_random_pack_probability: float = 0.0,
                 safeguard_positive_caption: bool = True, mlm_obj_for_only_positive: bool = False,
                 caption_format_version: str = "v1", max_query_len: int = MAX_QUERY_LEN, rng=None):
        if caption_format_version not in FORMAT_VERSIONS:
            raise ValueError("DATASETS.CAPTION_FORMAT_VERSION must be one of {}, got {!r}".format(
                FORMAT_VERSIONS, caption_format_version))
        self.rows = CaptionRows(yaml_file, replace_clean_label)
        declared = self.rows.cfg.get("caption_format_version")
        if declared is not None and declared != caption_format_version:
            raise ValueError("{} holds caption format {} but DATASETS.CAPTION_FORMAT_VERSION is {}".format(
                yaml_file, declared, caption_format_version))
        if tokenizer is None and return_tokens:
            from glip.data.positive_map import load_tokenizer

            tokenizer = load_tokenizer()
        self.yaml_file = yaml_file
        self._transforms = transforms
        self.return_tokens = return_tokens
        self.tokenizer = tokenizer
        self.caption_min_box = caption_min_box
        self.further_screen = further_screen
        self.caption_conf = caption_conf
        self.caption_nms = caption_nms
        self.pack_random_caption_number = pack_random_caption_number
        self.inference_caption = inference_caption
        self.sample_negative_for_grounding_data = sample_negative_for_grounding_data
        self.random_pack_prob = random_pack_prob
        self.no_random_pack_probability = no_random_pack_probability
        self.safeguard_positive_caption = safeguard_positive_caption
        self.mlm_obj_for_only_positive = mlm_obj_for_only_positive
        self.caption_format_version = caption_format_version
        self.max_query_len = max_query_len
        self.rng = rng or random
        self.skipped = Counter()

    def __len__(self):
        return len(self.rows)

    def get_img_info(self, idx: int) -> Optional[dict]:
        return self.rows.hw(idx)

    def get_img_id(self, idx: int) -> str:
        return self.rows.key(idx)

    def get_raw_image(self, idx: int):
        return self.rows.image(idx)

    def __getitem__(self, idx: int):
        for _ in range(MAX_REDRAWS):
            try:
                sample = self.load_sample(idx)
            except BadRowError as exc:
                self._count("bad row", idx, exc)
            else:
                if sample is not None:
                    return sample
                self._count("too few boxes", idx)
            idx = self.rng.randrange(len(self))
        raise RuntimeError("{}: {} rows in a row were skipped (counts: {}); check the data and DATASETS.CAPTION_* "
                           "options".format(self.yaml_file, MAX_REDRAWS, dict(self.skipped)))

    def _count(self, reason: str, idx: int, exc: Optional[Exception] = None) -> None:
        self.skipped[reason] += 1
        n = self.skipped[reason]
        if exc is None:  # the reference's silent redraw, counted; logged now and then
            log = logger.info if n in (1, 10, 100) or n % 1000 == 0 else logger.debug
            log("%s: row %d skipped (%s); skipped so far (this process): %s", self.yaml_file, idx, reason,
                dict(self.skipped))
            return
        if n <= _WARN_FIRST or n % 1000 == 0:
            logger.warning("%s: row %d skipped (%s: %s); skipped so far (this process): %s", self.yaml_file, idx,
                           reason, exc, dict(self.skipped))

    def random_caption(self) -> str:
        """The caption of a random row (a negative caption)."""
        idx = self.rng.randrange(len(self))
        try:
            return check_caption(self.rows.label_row(idx))
        except BadRowError as exc:
            raise BadRowError("negative caption row {}: {}".format(idx, exc)) from exc

    def load_sample(self, idx: int):
        """The sample of row ``idx``, or None when the screening leaves too few boxes; BadRowError if malformed."""
        img = self.rows.image(idx)
        anno = self.rows.label_row(idx)
        if self.inference_caption:
            caption = inference_caption(anno)
            return self._finish(img, idx, caption, [], [], [(0, len(caption))], img.size)
        caption = check_caption(anno)
        if not self.unpacked and len(anno.get("bboxes") or []) < self.caption_min_box:
            return None
        boxes, scores, tokens = read_boxes(anno, self.caption_format_version)
        _check_spans(caption, tokens)
        if self.further_screen:
            screened = screen_boxes(boxes, scores, tokens, self.caption_conf, self.caption_nms, self.caption_min_box)
            if screened is None:
                return None
            boxes, scores, tokens = screened
        if len(boxes) < self.caption_min_box:
            return None
        frame = _frame(anno, img.size)
        clipped = BoxList(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), frame, mode="xyxy")
        clipped = clipped.clip_to_image(remove_empty=False)
        keep = ((clipped.bbox[:, 2] > clipped.bbox[:, 0]) & (clipped.bbox[:, 3] > clipped.bbox[:, 1])).tolist()
        boxes = [b for b, k in zip(clipped.bbox.tolist(), keep) if k]
        tokens = [t for t, k in zip(tokens, keep) if k]
        caption, tokens, greenlight, negative = self._text(caption, tokens)
        if negative:
            boxes, tokens = [], []
        return self._finish(img, idx, caption, boxes, tokens, greenlight, frame)

    def _text(self, caption: str, tokens: List) -> tuple:
        """Steps 5-7: ``(caption, spans per box, MLM spans, whether the sample became a negative)``."""
        negative = self.sample_negative_for_grounding_data != -1 and \
            self.rng.random() < self.sample_negative_for_grounding_data
        if negative:
            caption = self.random_caption()
        greenlight = [(0, len(caption))]
        if self.pack_random_caption_number != 0:
            count = negative_pack_number(self.pack_random_caption_number, self.random_pack_prob,
                                         self.no_random_pack_probability, self.rng)
            negatives = [self.random_caption() for _ in range(count)]
            caption, tokens, greenlight = pack_caption(caption, negatives, tokens, self.tokenizer,
                                                       self.max_query_len, self.safeguard_positive_caption, self.rng)
        if not self.mlm_obj_for_only_positive:
            greenlight = [(0, len(caption))]
        return caption, tokens, greenlight, negative

    def _finish(self, img, idx: int, caption: str, boxes, tokens, greenlight, frame):
        """Target fields (``prepare_grounding_target``), then the transforms."""
        target = BoxList(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), frame, mode="xyxy")
        annotations = [{"bbox": b, "category_id": 1, "area": float(a), "iscrowd": 0, "tokens_positive": t}
                       for b, a, t in zip(boxes, target.area().tolist(), tokens)]
        fields = prepare_grounding_target(
            img.size, annotations, idx, caption=caption, tokenizer=self.tokenizer, box_format="xyxy",
            return_tokens=self.return_tokens, max_query_len=self.max_query_len, greenlight_spans=greenlight)
        target = target[fields["keep"]]
        target.add_field("caption", Caption(caption))
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        fields["caption"] = target.get_field("caption").text
        attach_fields(target, fields)
        return img, target, idx


@register_dataset("PseudoData", paths={"yaml_file": "yaml_file"})
class PseudoData(CaptionTSV):
    """Pseudo-labelled caption data read as the later GLIP code's ``PseudoData``: the rows and screening of
    :class:`CaptionTSV`, but no entry count before screening, no negative captions or packing, and the whole
    caption MLM-maskable (the packing / negative options do not apply to it). ``diver_box_for_vqa`` (VQA rows
    whose answer spans are moved onto a mask token) is not implemented and refused.
    """

    unpacked = True

    def __init__(self, yaml_file: str, transforms=None, return_tokens: bool = True, tokenizer=None,
                 caption_min_box: int = 1, replace_clean_label: bool = False, further_screen: bool = False,
                 caption_conf: float = 0.5, caption_nms: float = -1, inference_caption: bool = False,
                 caption_format_version: str = "v1", diver_box_for_vqa: bool = False,
                 max_query_len: int = MAX_QUERY_LEN, rng=None):
        if diver_box_for_vqa:
            raise NotImplementedError("DATASETS.DIVER_BOX_FOR_VQA (PseudoData VQA rows) is not implemented")
        super().__init__(yaml_file, transforms=transforms, return_tokens=return_tokens, tokenizer=tokenizer,
                         caption_min_box=caption_min_box, replace_clean_label=replace_clean_label,
                         further_screen=further_screen, caption_conf=caption_conf, caption_nms=caption_nms,
                         inference_caption=inference_caption, caption_format_version=caption_format_version,
                         max_query_len=max_query_len, rng=rng)
