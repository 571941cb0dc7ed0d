"""Image-caption pairs to pseudo-label, from the three input forms of ``tools/pseudo_label.py``.

* a folder: every image file (``.jpg .jpeg .png .bmp .webp``, sub-folders included) with a ``.txt`` file of the
  same name holding its caption (line breaks become spaces); key = the path without extension, relative to the
  folder; images without a caption file are skipped (counted).
* a COCO-captions json (``images`` with ``id`` / ``file_name``, ``annotations`` with ``image_id`` / ``caption``):
  images under ``image_root`` (default: the json's folder); the first caption of each image, key = the image id
  (``all_captions``: one pair per caption, key ``<image id>_<annotation id>``).
* a caption TSV: a dataset yaml (``img`` + ``label`` rows holding ``caption`` / ``captions``, the reference's
  inference-caption rows; the image column is copied as is) or a ``.tsv`` of rows ``key \\t caption \\t base64``.

A pair loads its image lazily: ``pair.load()`` -> ``(base64 text of the image file, PIL RGB image)``.
"""
import base64
import io
import json
import logging
import os
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Tuple

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class Pair(NamedTuple):
    """One image and its caption; ``load()`` -> ``(base64 image, PIL RGB image)``."""
    key: str
    caption: str
    load: Callable[[], Tuple[str, object]]


def _from_file(path: str):
    def load():
        from PIL import Image

        with open(path, "rb") as f:
            data = f.read()
        return base64.b64encode(data).decode("ascii"), Image.open(io.BytesIO(data)).convert("RGB")
    return load


def _from_b64(text: str):
    def load():
        from PIL import Image

        return text, Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")
    return load


def pairs_from_folder(folder: str) -> List[Pair]:
    root = Path(folder)
    pairs, missing = [], 0
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
        text_path = path.with_suffix(".txt")
        if not text_path.is_file():
            missing += 1
            continue
        caption = " ".join(text_path.read_text(encoding="utf-8").split())
        pairs.append(Pair(str(path.relative_to(root).with_suffix("")).replace(os.sep, "/"), caption,
                          _from_file(str(path))))
    if missing:
        logger.warning("%s: %d images have no .txt caption and are skipped", folder, missing)
    return pairs


def pairs_from_coco_captions(json_path: str, image_root: Optional[str] = None,
                             all_captions: bool = False) -> List[Pair]:
    with open(json_path) as f:
        data = json.load(f)
    if "images" not in data or "annotations" not in data:
        raise ValueError("{} is not a COCO-captions json (needs 'images' and 'annotations')".format(json_path))
    root = image_root or os.path.dirname(os.path.abspath(json_path))
    files = {im["id"]: os.path.join(root, im["file_name"]) for im in data["images"]}
    pairs, seen = [], set()
    for ann in data["annotations"]:
        image_id = ann["image_id"]
        if not all_captions and image_id in seen:
            continue
        seen.add(image_id)
        key = "{}_{}".format(image_id, ann["id"]) if all_captions else str(image_id)
        pairs.append(Pair(key, " ".join(str(ann["caption"]).split()), _from_file(files[image_id])))
    return pairs


def pairs_from_tsv(path: str) -> List[Pair]:
    if path.endswith((".yaml", ".yml")):
        from glip.data.caption_rules import inference_caption
        from glip.data.datasets.caption import CaptionRows

        rows = CaptionRows(path)
        pairs = []
        for idx in range(len(rows)):
            line = rows.line_no(idx)
            pairs.append(Pair(rows.key(idx), inference_caption(rows.label_row(idx)),
                              lambda line=line: _from_b64(rows.img_tsv.seek(line)[-1])()))
        return pairs
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError("{} row {}: want 'key<TAB>caption<TAB>base64 image', got {} columns".format(
                    path, number, len(parts)))
            pairs.append(Pair(parts[0], parts[1], _from_b64(parts[2])))
    return pairs


def read_pairs(path: str, image_root: Optional[str] = None, all_captions: bool = False) -> List[Pair]:
    """The pairs of ``path`` (a folder, a ``.json``, a ``.yaml`` or ``.tsv``); ValueError on repeated keys."""
    if os.path.isdir(path):
        pairs = pairs_from_folder(path)
    elif path.endswith(".json"):
        pairs = pairs_from_coco_captions(path, image_root, all_captions)
    elif path.endswith((".yaml", ".yml", ".tsv")):
        pairs = pairs_from_tsv(path)
    elif not os.path.exists(path):
        raise FileNotFoundError("input not found: {}".format(path))
    else:
        raise ValueError("input {} is neither a folder, a COCO-captions .json nor a caption .yaml / .tsv".format(
            path))
    keys = [p.key for p in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError("{}: repeated keys {} (one row per key; rename the files)".format(path, repeated))
    return pairs
