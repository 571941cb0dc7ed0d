"""TSV-format detection data (Objects365 and the other ``*_dt_train`` sets of the reference).

Layout: a yaml file names its parts relative to its own folder:
``img`` (rows ``key \\t base64 image``), ``label`` (rows ``key \\t json``: a list of objects
``{"rect": [x1, y1, x2, y2], "class": name}`` or ``{"objects": [...]}``), optional ``hw`` (rows
``key \\t [{"height", "width"}]`` or ``key \\t "h w"``), optional ``linelist`` (one row index per line, selects /
repeats rows) and ``labelmap`` (json ``{"label_to_idx": {name: id}}`` or ``{name: id}``; a ``.tsv`` labelmap lists
one name per line, ids from 1). Each TSV has a ``.lineidx`` file of row byte offsets (built when missing).
"""
import base64
import io
import json
import logging
import os
import os.path as op
import random
from typing import List, Optional, Sequence

import torch
import yaml
from PIL import Image

from glip.data.datasets.registry import register_dataset
from glip.data.grounding_target import attach_fields, prepare_grounding_target
from glip.data.od_to_grounding import check_for_positive_overflow, convert_od_to_grounding_with_negatives
from glip.data.positive_map import MAX_QUERY_LEN
from glip.data.transforms import Caption
from glip.structures.bounding_box import BoxList

logger = logging.getLogger(__name__)


def create_lineidx(tsv_file: str, lineidx_file: str) -> None:
    """Write the byte offset of every row of ``tsv_file`` to ``lineidx_file`` (one per line)."""
    offsets = []
    with open(tsv_file, "rb") as f:
        pos = 0
        for line in f:
            offsets.append(pos)
            pos += len(line)
    tmp = lineidx_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join("{}\n".format(o) for o in offsets))
    os.replace(tmp, lineidx_file)


class TSVFile:
    """Random access to the rows of a TSV file through its ``.lineidx`` offsets (reopened after a fork)."""

    def __init__(self, tsv_file: str, generate_lineidx: bool = True):
        if not op.isfile(tsv_file):
            raise FileNotFoundError("TSV file not found: {}".format(tsv_file))
        self.tsv_file = tsv_file
        self.lineidx = op.splitext(tsv_file)[0] + ".lineidx"
        if not op.isfile(self.lineidx):
            if not generate_lineidx:
                raise FileNotFoundError("line index not found: {}".format(self.lineidx))
            create_lineidx(tsv_file, self.lineidx)
        with open(self.lineidx) as f:
            self._offsets = [int(line) for line in f if line.strip()]
        self._fp = None
        self._pid = None

    def __len__(self):
        return len(self._offsets)

    def seek(self, idx: int) -> List[str]:
        if self._fp is None or self._pid != os.getpid():
            self._fp = open(self.tsv_file, "rb")
            self._pid = os.getpid()
        self._fp.seek(self._offsets[idx])
        return [s.strip() for s in self._fp.readline().decode("utf-8").split("\t")]

    def __getitem__(self, idx: int) -> List[str]:
        return self.seek(idx)

    def __del__(self):
        if getattr(self, "_fp", None) is not None:
            self._fp.close()


def img_from_base64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def _find(name: Optional[str], root: str) -> Optional[str]:
    if name is None:
        return None
    for candidate in (name, op.join(root, name)):
        if op.isfile(candidate):
            return candidate
    raise FileNotFoundError("file named in the TSV yaml not found: {}".format(op.join(root, name)))


def load_labelmap(path: str) -> dict:
    """``{class name: id}`` from a json labelmap (with or without ``label_to_idx``) or a one-name-per-line tsv."""
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        return dict(data.get("label_to_idx", data))
    with open(path) as f:
        return {line.strip(): i for i, line in enumerate((line for line in f if line.strip()), start=1)}


@register_dataset("ODTSVDataset", paths={"yaml_file": "yaml_path"})
class ODTSVDataset(torch.utils.data.Dataset):
    """Detection samples ``(image, BoxList with "labels", index, scale)`` from a TSV yaml.

    Boxes are ``rect`` xyxy clipped to the image (empty ones kept); labels are ``labelmap`` ids
    (``__background__`` = 0). ``scale`` is sqrt(new area / old area) after the transforms.
    """

    def __init__(self, yaml_file: str, transforms=None):
        if not op.isfile(yaml_file):
            raise FileNotFoundError("TSV yaml not found: {}".format(yaml_file))
        with open(yaml_file) as f:
            self.cfg = yaml.safe_load(f)
        self.root = op.dirname(yaml_file)
        self.img_tsv = TSVFile(_find(self.cfg["img"], self.root))
        label_file = _find(self.cfg.get("label"), self.root)
        self.label_tsv = TSVFile(label_file) if label_file else None
        hw_file = _find(self.cfg.get("hw"), self.root)
        self.hw_tsv = TSVFile(hw_file) if hw_file else None
        linelist = _find(self.cfg.get("linelist"), self.root)
        self.line_list = None
        if linelist:
            with open(linelist) as f:
                self.line_list = [int(line.strip()) for line in f if line.strip()]
        labelmap = _find(self.cfg.get("labelmap") or self.cfg.get("jsondict"), self.root)
        if labelmap is None:
            raise FileNotFoundError("TSV yaml {} names no labelmap".format(yaml_file))
        self.class_to_ind = load_labelmap(labelmap)
        self.class_to_ind["__background__"] = 0
        self.ind_to_class = {v: k for k, v in self.class_to_ind.items()}
        self.transforms = transforms

    def __len__(self):
        return len(self.line_list) if self.line_list is not None else len(self.img_tsv)

    def get_line_no(self, idx: int) -> int:
        return idx if self.line_list is None else self.line_list[idx]

    def get_image(self, idx: int) -> Image.Image:
        row = self.img_tsv.seek(self.get_line_no(idx))
        try:
            return img_from_base64(row[-1])
        except Exception as exc:
            raise OSError("cannot decode image of row {} ({}) in {}".format(
                self.get_line_no(idx), row[0], self.img_tsv.tsv_file)) from exc

    def get_annotations(self, idx: int) -> List[dict]:
        if self.label_tsv is None:
            return []
        data = json.loads(self.label_tsv.seek(self.get_line_no(idx))[1])
        return data["objects"] if isinstance(data, dict) else data

    def get_target(self, annotations: Sequence[dict], img_size) -> BoxList:
        boxes = torch.as_tensor([obj["rect"] for obj in annotations], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, img_size, mode="xyxy")
        target.add_field("labels", torch.tensor([self.class_to_ind[obj["class"]] for obj in annotations],
                                                dtype=torch.int64))
        return target.clip_to_image(remove_empty=False)

    def get_img_info(self, idx: int) -> Optional[dict]:
        """``{"height", "width"}`` from the hw TSV (None without one)."""
        if self.hw_tsv is None:
            return None
        value = self.hw_tsv.seek(self.get_line_no(idx))[1]
        try:
            data = json.loads(value)
            return data[0] if isinstance(data, list) else data
        except ValueError:
            h, w = value.split(" ")
            return {"height": int(h), "width": int(w)}

    def get_img_id(self, idx: int):
        """Integer key of the label row, or ``idx`` when the key is not an integer."""
        tsv = self.label_tsv or self.img_tsv
        key = tsv.seek(self.get_line_no(idx))[0]
        try:
            return int(key)
        except ValueError:
            return idx

    def __getitem__(self, idx: int):
        img = self.get_image(idx)
        target = self.get_target(self.get_annotations(idx), img.size)
        size = img.size
        if self.transforms is not None:
            img, target = self.transforms(img, target)
            new_h, new_w = img.shape[1:]
            return img, target, idx, (float(new_h * new_w) / float(size[0] * size[1])) ** 0.5
        return img, target, idx, 1.0


_GROUNDING_TSV_CATALOG = dict(paths={"yaml_file": "yaml_path"}, values={"name": "dataset_file"})


@register_dataset("CocoDetectionTSV", **_GROUNDING_TSV_CATALOG)
class CocoDetectionTSV(ODTSVDataset):
    """TSV detection as grounding (``object365_dt_train`` etc.): samples ``(image, BoxList, index)``.

    Per sample: boxes clipped and empty ones removed; positives limited to ``max_query_len - 2`` tokens (boxes of
    dropped classes removed, with a warning); negatives sampled per ``random_sample_negative`` /
    ``control_probabilities``; fields from :func:`prepare_grounding_target` (xyxy boxes) including
    ``positive_map_for_od_labels``.
    """

    def __init__(self, name: str, yaml_file: str, transforms=None, return_tokens: bool = True, tokenizer=None,
                 random_sample_negative: int = -1, add_detection_prompt: bool = False,
                 add_detection_prompt_advanced: bool = False, control_probabilities=(0.0, 0.0, 1.0, 0.0),
                 disable_shuffle: bool = False, disable_clip_to_image: bool = False, separation_tokens: str = " ",
                 no_mask_for_od: bool = False, max_num_labels: int = -1, max_query_len: int = MAX_QUERY_LEN,
                 rng: Optional[random.Random] = None):
        super().__init__(yaml_file, transforms=None)
        if tokenizer is None:
            from glip.data.positive_map import load_tokenizer

            tokenizer = load_tokenizer()
        self.name = name
        self._transforms = transforms
        self.return_tokens = return_tokens
        self.tokenizer = tokenizer
        self.random_sample_negative = random_sample_negative
        self.add_detection_prompt = add_detection_prompt
        self.add_detection_prompt_advanced = add_detection_prompt_advanced
        self.control_probabilities = tuple(control_probabilities) if control_probabilities else (0.0, 0.0, 1.0, 0.0)
        self.disable_shuffle = disable_shuffle
        self.disable_clip_to_image = disable_clip_to_image
        self.separation_tokens = separation_tokens
        self.no_mask_for_od = no_mask_for_od
        self.max_num_labels = max_num_labels
        self.max_query_len = max_query_len
        self.rng = rng or random

    def categories(self, no_background: bool = True) -> dict:
        return {k: v for k, v in self.ind_to_class.items() if not no_background or (k != 0)}

    def __getitem__(self, idx: int):
        img = self.get_image(idx)
        target = self.get_target(self.get_annotations(idx), img.size)
        image_id = self.get_img_id(idx)
        if not self.disable_clip_to_image:
            target = target.clip_to_image(remove_empty=True)
        labels = target.get_field("labels").tolist()
        keep, length = check_for_positive_overflow(labels, self.ind_to_class, self.tokenizer, self.max_query_len - 2,
                                                   rng=self.rng)
        if len(keep) < len(labels):
            logger.warning("row %s: removed %d boxes due to positive caption overflow", image_id,
                           len(labels) - len(keep))
        target = target[torch.as_tensor(keep, dtype=torch.long)]
        labels = target.get_field("labels").tolist()
        tokens_positive, caption, greenlight, label_to_positions = convert_od_to_grounding_with_negatives(
            labels, self.ind_to_class, self.tokenizer, disable_shuffle=self.disable_shuffle,
            add_detection_prompt=self.add_detection_prompt,
            add_detection_prompt_advanced=self.add_detection_prompt_advanced,
            random_sample_negative=self.random_sample_negative, control_probabilities=self.control_probabilities,
            separation_tokens=self.separation_tokens, max_num_labels=self.max_num_labels,
            max_seq_length=self.max_query_len - 2, positive_caption_length=length, rng=self.rng)
        annotations = [{"bbox": b, "category_id": int(c), "area": float(a), "iscrowd": 0, "tokens_positive": s,
                        "original_od_label": int(c)}
                       for b, c, a, s in zip(target.bbox.tolist(), labels, target.area().tolist(), tokens_positive)]
        if self.no_mask_for_od:
            greenlight = list(greenlight) + [(-1, -1, -1)]
        fields = prepare_grounding_target(
            img.size, annotations, image_id, caption=caption, tokenizer=self.tokenizer, box_format="xyxy",
            return_tokens=self.return_tokens, max_query_len=self.max_query_len, greenlight_spans=greenlight,
            label_to_positions=label_to_positions)
        fields["label_to_positions"] = label_to_positions
        target = target[fields["keep"]]
        target.add_field("caption", Caption(caption))
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        fields["caption"] = target.get_field("caption").text
        attach_fields(target, fields)
        return img, target, idx


@register_dataset("Object365DetectionTSV", **_GROUNDING_TSV_CATALOG)
class Object365DetectionTSV(CocoDetectionTSV):
    """Objects365 in the reference's TSV layout."""
