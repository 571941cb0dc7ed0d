"""Dataset folder validation: report what is missing or malformed before a long run finds it.

Formats: ``coco`` (detection json: COCO, ODinW, LVIS, few-shot files), ``mdetr`` (grounding json with captions
and ``tokens_positive``: Flickr30k, GoldG mixed), ``tsv`` (Objects365-style yaml + TSV). Each check returns a
:class:`Report` of errors (the loader would fail or silently lose data) and warnings (the loader copes: boxes
clipped/dropped, images without annotations).

Two depths: :func:`check_coco` / :func:`check_tsv` look at everything (``tools/check_dataset.py``);
:func:`quick_check` (the tools' checks before a run) only at what would stop the run or silently lose data, and
cheaply: files and folders present, json files up to :data:`QUICK_JSON_BYTES` read (category ids outside the
categories, image files missing, the first :data:`QUICK_DECODED` images' headers decodable, captions empty or
cut by the token limit), larger ones and TSV data only located.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

QUICK_JSON_BYTES = 32 * 2 ** 20
QUICK_DECODED = 1000
GROUNDING_FACTORIES = ("FlickrDataset", "MixedDataset", "ModulatedDataset")

MAX_LISTED = 10


@dataclass
class Report:
    """Outcome of a check: ``errors`` (must fix), ``warnings`` and counts of what was seen."""

    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, kind: str, items: List[str], what: str):
        """Record ``len(items)`` problems of one kind, listing the first few."""
        if not items:
            return
        shown = ", ".join(items[:MAX_LISTED]) + (" ..." if len(items) > MAX_LISTED else "")
        (self.errors if kind == "error" else self.warnings).append("{} {}: {}".format(len(items), what, shown))

    def format(self) -> str:
        lines = ["{}: {}".format(k, v) for k, v in self.stats.items()]
        lines += ["ERROR   " + e for e in self.errors] + ["WARNING " + w for w in self.warnings]
        lines.append("OK" if self.ok else "FAILED ({} problems)".format(len(self.errors)))
        return "\n".join(lines)


def _load_json(path: str, report: Report) -> Optional[dict]:
    if not os.path.isfile(path):
        report.errors.append("annotation file not found: {}".format(path))
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as exc:
        report.errors.append("annotation file is not valid json: {} ({})".format(path, exc))
        return None
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        report.errors.append("{} lacks the keys {}".format(path, missing))
        return None
    return data


def _image_file(img_dir: str, record: dict) -> str:
    if "coco_url" in record and "file_name" not in record:
        return os.path.join(img_dir, *record["coco_url"].split("/")[-2:])
    return os.path.join(img_dir, record.get("file_name", ""))


def check_coco(ann_file: str, img_dir: Optional[str], grounding: bool = False, check_images: bool = True,
               vg_img_dir: Optional[str] = None) -> Report:
    """Validate a COCO-format json (``grounding``: also captions / ``tokens_positive`` as MDETR files need)."""
    report = Report()
    data = _load_json(ann_file, report)
    if data is None:
        return report
    images = {img.get("id"): img for img in data["images"]}
    cat_ids = {c.get("id") for c in data["categories"]}
    report.stats.update(images=len(images), annotations=len(data["annotations"]), categories=len(cat_ids))
    bad_images = [str(i.get("id")) for i in data["images"] if not {"id", "width", "height"} <= set(i)
                  or ("file_name" not in i and "coco_url" not in i)]
    report.add("error", bad_images, "image records without id/width/height/file_name")
    if not grounding and not data["categories"]:
        report.errors.append("no categories")

    unknown_image, unknown_cat, bad_box, outside, degenerate, bad_span = [], [], [], [], [], []
    annotated = set()
    for ann in data["annotations"]:
        aid = str(ann.get("id"))
        img = images.get(ann.get("image_id"))
        if img is None:
            unknown_image.append(aid)
            continue
        annotated.add(ann["image_id"])
        if not grounding and ann.get("category_id") not in cat_ids:
            unknown_cat.append(aid)
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4:
            bad_box.append(aid)
            continue
        x, y, w, h = box
        if w <= 1 or h <= 1:
            degenerate.append(aid)
        elif x < 0 or y < 0 or x + w > img.get("width", 0) + 1 or y + h > img.get("height", 0) + 1:
            outside.append(aid)
        if grounding:
            spans = ann.get("tokens_positive", ann.get("tokens"))
            caption = img.get("caption", "")
            if not spans or any(not (0 <= b < e <= len(caption)) for b, e in spans):
                bad_span.append(aid)
    report.add("error", unknown_image, "annotations of unknown images")
    report.add("error", unknown_cat, "annotations with unknown category_id")
    report.add("error", bad_box, "annotations without a 4-number bbox")
    report.add("error", bad_span, "annotations whose tokens_positive are missing or outside the caption")
    report.add("warning", outside, "boxes extending outside their image (clipped by the loader)")
    report.add("warning", degenerate, "boxes with width or height <= 1 (dropped by the loader)")
    unannotated = [str(i) for i in images if i not in annotated]
    report.add("warning", unannotated, "images without annotations (skipped in training)")
    if grounding:
        report.add("error", [str(i) for i, r in images.items() if not r.get("caption")], "images without caption")

    if check_images and img_dir is not None:
        missing = []
        for record in images.values():
            root = vg_img_dir if vg_img_dir and record.get("data_source") not in (None, "coco") else img_dir
            path = _image_file(root, record)
            if not os.path.isfile(path):
                missing.append(path)
        report.add("error", missing, "image files missing")
    return report


def check_tsv(yaml_file: str) -> Report:
    """Validate an Objects365-style TSV yaml: named files exist, rows parse, classes are in the labelmap."""
    import yaml

    from glip.data.datasets.tsv import TSVFile, img_from_base64, load_labelmap

    report = Report()
    if not os.path.isfile(yaml_file):
        report.errors.append("TSV yaml not found: {}".format(yaml_file))
        return report
    with open(yaml_file) as f:
        spec = yaml.safe_load(f) or {}
    root = os.path.dirname(yaml_file)
    paths = {k: os.path.join(root, spec[k]) for k in ("img", "label", "hw", "labelmap", "linelist") if spec.get(k)}
    for key in ("img", "labelmap"):
        if key not in paths:
            report.errors.append("yaml names no '{}' file".format(key))
    report.add("error", [p for p in paths.values() if not os.path.isfile(p)], "files named in the yaml missing")
    if not report.ok:
        return report
    labelmap = load_labelmap(paths["labelmap"])
    img_tsv = TSVFile(paths["img"])
    report.stats.update(rows=len(img_tsv), classes=len(labelmap))
    undecodable = []
    for i in range(min(len(img_tsv), 20)):
        try:
            img_from_base64(img_tsv[i][-1])
        except Exception:
            undecodable.append(str(i))
    report.add("error", undecodable, "image rows (of the first 20) that do not decode")
    if "label" in paths:
        label_tsv = TSVFile(paths["label"])
        if len(label_tsv) != len(img_tsv):
            report.errors.append("label rows ({}) != image rows ({})".format(len(label_tsv), len(img_tsv)))
        unknown, malformed = set(), []
        for i in range(len(label_tsv)):
            try:
                objs = json.loads(label_tsv[i][1])
                objs = objs["objects"] if isinstance(objs, dict) else objs
                unknown.update(o["class"] for o in objs if o["class"] not in labelmap)
                if any(len(o["rect"]) != 4 for o in objs):
                    malformed.append(str(i))
            except (ValueError, KeyError, IndexError, TypeError):
                malformed.append(str(i))
        report.add("error", malformed, "label rows that do not parse")
        report.add("error", sorted(unknown), "classes missing from the labelmap")
    return report


# --------------------------------------------------------------------------------------------- quick checks
def dataset_inputs(factory: str, args: Dict[str, str]) -> dict:
    """What a catalog factory's constructor arguments ``args`` read: ``ann_file``, ``img_dir``, ``vg_img_dir``,
    ``yaml_file`` (absent ones None) and ``grounding`` (captions with spans rather than categories)."""
    return {"ann_file": args.get("ann_file"), "yaml_file": args.get("yaml_file"),
            "img_dir": args.get("img_folder", args.get("root", args.get("img_folder_coco"))),
            "vg_img_dir": args.get("img_folder_vg"), "grounding": factory in GROUNDING_FACTORIES}


def quick_check(inputs: dict, count_tokens: Optional[Callable[[str], List[tuple]]] = None,
                max_query_len: int = 256) -> Report:
    """The cheap checks (module docstring) of a dataset's :func:`dataset_inputs`.

    ``count_tokens(caption) -> [(char begin, char end), ...]`` (the tokenizer's offsets, special tokens included)
    enables the caption-length check of grounding files.
    """
    report = Report()
    for key in ("img_dir", "vg_img_dir"):
        if inputs.get(key) and not os.path.isdir(inputs[key]):
            report.errors.append("image folder not found: {}".format(inputs[key]))
    if inputs.get("yaml_file"):
        return _quick_tsv(inputs["yaml_file"], report)
    ann_file = inputs.get("ann_file")
    if not ann_file:
        return report
    if not os.path.isfile(ann_file):
        report.errors.append("annotation file not found: {}".format(ann_file))
        return report
    if os.path.getsize(ann_file) > QUICK_JSON_BYTES:
        report.stats["annotations"] = "not read before the run ({} MB)".format(os.path.getsize(ann_file) >> 20)
        return report
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        report.errors.append("annotation file is not valid json: {} ({})".format(ann_file, exc))
        return report
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        report.errors.append("annotation file {} has no 'images' list".format(ann_file))
        return report
    annotations = data.get("annotations") or []
    if not inputs.get("grounding") and "categories" in data:
        _quick_categories(data["categories"] or [], annotations, report)
    if inputs.get("grounding"):
        _quick_captions(data["images"], annotations, count_tokens, max_query_len, report)
    if inputs.get("img_dir") and os.path.isdir(inputs["img_dir"]):
        _quick_images(data["images"], inputs["img_dir"], inputs.get("vg_img_dir"), report)
    return report


def _first(items: List[str], what: str) -> str:
    return "{} {} (first: {})".format(len(items), what, items[0])


def _quick_categories(categories: List[dict], annotations: List[dict], report: Report):
    known = {c.get("id") for c in categories}
    unknown = [a for a in annotations if a.get("category_id") not in known]
    if unknown:
        ids = sorted({str(a.get("category_id")) for a in unknown})
        report.errors.append("{} annotations use category ids outside 'categories' (first: annotation {} of image "
                             "{}, category_id {}; unknown ids {}; 'categories' lists {}): add them to 'categories' "
                             "or fix the annotations".format(
                                 len(unknown), unknown[0].get("id"), unknown[0].get("image_id"),
                                 unknown[0].get("category_id"), ", ".join(ids[:10]),
                                 sorted(known, key=str)[:10] or "none"))


def _quick_captions(images: List[dict], annotations: List[dict], count_tokens, max_query_len: int, report: Report):
    empty = [str(i.get("id")) for i in images if not str(i.get("caption") or "").strip()]
    if empty:
        report.errors.append(_first(empty, "images with an empty caption"))
    if count_tokens is None:
        return
    spans: Dict[object, List] = {}
    for ann in annotations:
        spans.setdefault(ann.get("image_id"), []).extend(ann.get("tokens_positive") or ann.get("tokens") or [])
    cut, long = [], 0
    for image in images:
        caption = str(image.get("caption") or "")
        offsets = count_tokens(caption) if caption.strip() else []
        if len(offsets) <= max_query_len:
            continue
        long += 1
        kept_end = offsets[max_query_len - 2][1]  # the last text token kept next to [CLS] ... [SEP]
        lost = [span for span in spans.get(image.get("id"), []) if len(span) == 2 and span[1] > kept_end]
        if lost:
            cut.append("image {}: {} tokens, the phrase {!r} lies past token {}".format(
                image.get("id"), len(offsets), caption[lost[0][0]:lost[0][1]], max_query_len))
    if cut:
        report.errors.append(_first(cut, "captions longer than MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN cut off boxed "
                                         "phrases; shorten them or raise MAX_QUERY_LEN"))
    elif long:
        report.warnings.append("{} captions are longer than {} tokens (truncated; no boxed phrase is lost)".format(
            long, max_query_len))


def _quick_images(images: List[dict], img_dir: str, vg_img_dir: Optional[str], report: Report):
    from PIL import Image

    missing, undecodable, decoded = [], [], 0
    for record in images:
        root = vg_img_dir if vg_img_dir and record.get("data_source") not in (None, "coco") else img_dir
        path = _image_file(root, record)
        if not os.path.isfile(path):
            missing.append(path)
            continue
        if decoded >= QUICK_DECODED:
            continue
        decoded += 1
        try:
            Image.open(path).close()  # reads the header: a file that is not an image fails here
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
            undecodable.append("{} ({})".format(path, type(exc).__name__))
    if missing:
        report.errors.append(_first(missing, "image files missing"))
    if undecodable:
        report.errors.append(_first(undecodable, "files that do not decode as images"))


def _quick_tsv(yaml_file: str, report: Report) -> Report:
    import yaml

    if not os.path.isfile(yaml_file):
        report.errors.append("TSV yaml not found: {}".format(yaml_file))
        return report
    try:
        with open(yaml_file) as f:
            spec = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        report.errors.append("TSV yaml {} does not parse ({})".format(yaml_file, str(exc).split("\n")[0]))
        return report
    root = os.path.dirname(yaml_file)
    named = [os.path.join(root, spec[k]) for k in ("img", "label", "hw", "labelmap", "linelist")
             if isinstance(spec, dict) and spec.get(k)]
    missing = [p for p in named if not os.path.isfile(p)]
    if missing:
        report.errors.append(_first(missing, "files named in {} missing".format(yaml_file)))
    return report
