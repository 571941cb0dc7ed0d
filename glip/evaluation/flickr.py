"""Flickr30k Entities phrase grounding: Recall@1/5/10 (and the upper bound) per phrase, the MDETR protocol.

Ground truth comes from the Flickr30k Entities files under `flickr_path`: `<subset>.txt` (image ids),
`Annotations/<id>.xml` (boxes x1y1x2y2 per phrase id) and `Sentences/<id>.txt` (bracketed phrases
`[/EN#<phrase id>/<type>[/<type>...] words]`). Phrases without a box are not evaluated. A phrase is recalled at k
if one of its k highest-scoring boxes has IoU >= 0.5 (no +1 rule) with one of its gt boxes ("separate" GT) or
with the smallest box enclosing them all ("merged" GT, `merge_boxes=True`). Recall is reported for "all" phrases
and per phrase type (people, clothing, bodyparts, animals, vehicles, instruments, scene, other).
`FlickrEvaluator` is the protocol "flickr" of `glip.evaluation.evaluator`.
"""
import logging
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np

from glip.evaluation.evaluator import DatasetEvaluator, as_int, original_size, register_evaluator, target_value
from glip.utils.comm import all_gather, is_main_process, synchronize

logger = logging.getLogger(__name__)


def parse_sentences(filename):
    """Sentences of one image: `[{"sentence": str, "phrases": [{"first_word_index", "phrase", "phrase_id",
    "phrase_type": [str]}]}]`."""
    with open(filename, "r") as f:
        lines = f.read().split("\n")
    out = []
    for line in lines:
        if not line:
            continue
        words, phrases, current = [], [], None
        for token in line.split():
            if current is not None:
                closing = token.endswith("]")
                word = token[:-1] if closing else token
                current["words"].append(word)
                words.append(word)
                if closing:
                    phrases.append(current)
                    current = None
            elif token.startswith("["):
                parts = token.split("/")
                current = {"first_word_index": len(words), "phrase_id": parts[1][3:], "phrase_type": parts[2:],
                           "words": []}
            else:
                words.append(token)
        out.append({"sentence": " ".join(words),
                    "phrases": [{"first_word_index": p["first_word_index"], "phrase": " ".join(p["words"]),
                                 "phrase_id": p["phrase_id"], "phrase_type": p["phrase_type"]}
                                for p in phrases]})
    return out


def parse_annotation(filename):
    """One image's xml: `{"boxes": {phrase_id: [[x1, y1, x2, y2], ...]}, "nobox": [...], "scene": [...],
    "width", "height", "depth"}`."""
    root = ET.parse(filename).getroot()
    info = {}
    for element in root.findall("size")[0]:
        info[element.tag] = int(element.text)
    boxes, nobox, scene = {}, [], []
    for obj in root.findall("object"):
        for name in obj.findall("name"):
            box_id = name.text
            bndbox = obj.findall("bndbox")
            if bndbox:
                coords = [int(bndbox[0].findall(tag)[0].text) for tag in ("xmin", "ymin", "xmax", "ymax")]
                boxes.setdefault(box_id, []).append(coords)
            else:
                if int(obj.findall("nobndbox")[0].text) > 0:
                    nobox.append(box_id)
                if int(obj.findall("scene")[0].text) > 0:
                    scene.append(box_id)
    info.update(boxes=boxes, nobox=nobox, scene=scene)
    return info


def enclosing_box(boxes):
    """The smallest box enclosing all `boxes` (x1y1x2y2), as a one-element list."""
    if len(boxes) == 1:
        return boxes
    arr = np.asarray(boxes)
    return [[arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max()]]


def box_iou(boxes1, boxes2):
    """(N, 4) x (M, 4) x1y1x2y2 -> (N, M) IoU with areas (x2 - x1) * (y2 - y1)."""
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = np.maximum(boxes1[:, None, :2], boxes2[:, :2])
    rb = np.minimum(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clip(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


class RecallTracker:
    """Hit / total counts per k and phrase category; `report()` -> `{k: {category: recall}}`."""

    def __init__(self, topk):
        self.total = {k: defaultdict(int) for k in topk}
        self.positives = {k: defaultdict(int) for k in topk}

    def add(self, k, category, hit):
        if k not in self.total:
            raise RuntimeError("{} is not a valid recall threshold".format(k))
        self.total[k][category] += 1
        self.positives[k][category] += int(bool(hit))

    def report(self):
        return {k: {cat: self.positives[k][cat] / self.total[k][cat] for cat in self.total[k]} for k in self.total}


class FlickrRecallEvaluator:
    """Loads the gt of a Flickr30k Entities `subset` and scores predictions.

    `evaluate(predictions)`: each prediction is `{"image_id", "sentence_id", "boxes": one list of x1y1x2y2 boxes
    per evaluated phrase of the sentence (in sentence order, best first)}`. Every evaluable sentence needs exactly
    one prediction. `k = -1` is the upper bound (any box).
    """

    def __init__(self, flickr_path, subset="test", topk=(1, 5, 10, -1), iou_thresh=0.5, merge_boxes=False):
        if subset not in ("train", "test", "val"):
            raise ValueError("wrong flickr subset {}".format(subset))
        self.topk = tuple(topk)
        self.iou_thresh = iou_thresh
        flickr_path = Path(flickr_path)
        with open(flickr_path / "{}.txt".format(subset)) as f:
            self.img_ids = [line.strip() for line in f if line.strip()]
        self.imgid2boxes = {}
        for img_id in self.img_ids:
            boxes = parse_annotation(flickr_path / "Annotations" / "{}.xml".format(img_id))["boxes"]
            if merge_boxes:
                boxes = {pid: enclosing_box(b) for pid, b in boxes.items()}
            self.imgid2boxes[img_id] = boxes
        self.imgid2sentences = {}
        self.all_ids = set()
        num_phrases = 0
        for img_id in self.img_ids:
            sentences = parse_sentences(flickr_path / "Sentences" / "{}.txt".format(img_id))
            kept = []
            for sent_id, sentence in enumerate(sentences):
                phrases = [p for p in sentence["phrases"] if p["phrase_id"] in self.imgid2boxes[img_id]]
                kept.append(phrases or None)
                if phrases:
                    self.all_ids.add("{}_{}".format(img_id, sent_id))
                num_phrases += len(phrases)
            self.imgid2sentences[img_id] = kept
        logger.info("Flickr %s: %d images, %d phrases in %d sentences", subset, len(self.img_ids), num_phrases,
                    len(self.all_ids))

    def evaluate(self, predictions):
        evaluated = set()
        tracker = RecallTracker(self.topk)
        for pred in predictions:
            img_id, sent_id = str(pred["image_id"]), int(pred["sentence_id"])
            cur_id = "{}_{}".format(img_id, sent_id)
            if cur_id in evaluated:
                logger.warning("multiple predictions for sentence %s of image %s", sent_id, img_id)
                continue
            if cur_id not in self.all_ids:
                if len(pred["boxes"]) != 0:
                    logger.warning("unexpected predictions for sentence %s of image %s ignored", sent_id, img_id)
                continue
            evaluated.add(cur_id)
            phrases = self.imgid2sentences[img_id][sent_id]
            if len(pred["boxes"]) != len(phrases):
                raise RuntimeError("got {} predictions, expected {} for sentence {} in image {}".format(
                    len(pred["boxes"]), len(phrases), sent_id, img_id))
            for boxes, phrase in zip(pred["boxes"], phrases):
                ious = box_iou(boxes, self.imgid2boxes[img_id][phrase["phrase_id"]])
                for k in self.topk:
                    top = ious if k == -1 else ious[:k]
                    hit = top.size > 0 and top.max() >= self.iou_thresh
                    for category in ["all"] + list(phrase["phrase_type"]):
                        tracker.add(k, category, hit)
        missing = self.all_ids - evaluated
        if missing:
            raise RuntimeError("missing predictions for sentences {}".format(sorted(missing)[:20]))
        return tracker.report()


@register_evaluator("flickr")
class FlickrEvaluator(DatasetEvaluator):
    """Flickr30k Entities recall of a grounding dataset (targets with `positive_map_eval`, `original_img_id`,
    `sentence_id`, `orig_size`), against the gt of `subset` under `flickr_path`.

    `process` turns each output (labels = phrase index + `label_offset`) into the per-phrase ranked boxes of
    `flickr_post_process` (original pixels); `update` adds such prediction dicts directly. `evaluate()` gathers
    them over processes, logs the table and writes `<output_folder>/bbox.csv`. Metrics `Recall@<k>_<category>`,
    `Upper_bound_<category>`; primary `Recall@1_all`.
    """

    primary_metric = "Recall@1_all"

    def __init__(self, flickr_path, subset, top_k=(1, 5, 10, -1), iou_thresh=0.5, merge_boxes=False,
                 dataset=None, output_folder=None, label_offset=1):
        self.evaluator = FlickrRecallEvaluator(flickr_path, subset=subset, topk=top_k, iou_thresh=iou_thresh,
                                               merge_boxes=merge_boxes)
        self.dataset = dataset
        self.output_folder = output_folder
        self.label_offset = label_offset
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset, output_folder=None, label_offset=None, flickr_path=None, **_):
        """The split of `DATASETS.TEST[0]` ("test" in its name -> test, else val) with `DATASETS.FLICKR_GT_TYPE`
        ("merged" or "separate"); `label_offset` is the head's first grounding label (1 for VLDYHEAD).
        `flickr_path` defaults to `flickr30k/flickr30k` (holding `test.txt`, `Annotations/`, `Sentences/`) under
        the data roots (`./`, `$DATASET`, `./DATASET`...), the reference's hard-coded `DATASET/flickr30k/flickr30k/`.
        """
        if label_offset is None:
            raise ValueError("the Flickr30k evaluator needs the head's label_offset")
        if flickr_path is None:
            from glip.config.paths_catalog import try_to_find

            try:
                flickr_path = try_to_find("flickr30k/flickr30k")
            except FileNotFoundError:
                flickr_path = "DATASET/flickr30k/flickr30k/"
        subset = "test" if "test" in cfg.DATASETS.TEST[0] else "val"
        return cls(flickr_path, subset, merge_boxes=cfg.DATASETS.FLICKR_GT_TYPE == "merged", dataset=dataset,
                   output_folder=output_folder, label_offset=label_offset)

    def reset(self):
        self.predictions = []

    def update(self, predictions):
        """Add prediction dicts (`{"image_id", "sentence_id", "boxes"}`, see `FlickrRecallEvaluator`)."""
        self.predictions += list(predictions)

    def process(self, indices, targets, outputs):
        for index, target, output in zip(indices, targets, outputs):
            output = output.resize(original_size(target, self.dataset, as_int(index)))
            num_phrases = len(target.get_field("positive_map_eval"))
            self.predictions.append(flickr_post_process(output, target_value(target, "original_img_id"),
                                                        target_value(target, "sentence_id"), num_phrases,
                                                        plus=self.label_offset))

    def evaluate(self):
        predictions = [p for part in all_gather(self.predictions) for p in part]
        result = None
        if is_main_process():
            score = self.summarize(predictions)
            if self.output_folder:
                os.makedirs(self.output_folder, exist_ok=True)
                write_flickr_results(score, os.path.join(self.output_folder, "bbox.csv"))
            result = self.result(score)
        synchronize()
        return result

    def summarize(self, predictions):
        """`{"Recall@1_all": r, ..., "Upper_bound_<cat>": r}` of `predictions`; logs the table."""
        report = self.evaluator.evaluate(predictions)
        categories = sorted(next(iter(report.values())).keys())
        score, rows = {}, ["Recall@k " + " ".join(categories)]
        for k, per_cat in report.items():
            header = "Upper_bound" if k == -1 else "Recall@{}".format(k)
            for cat in categories:
                score["{}_{}".format(header, cat)] = per_cat[cat]
            rows.append(header + " " + " ".join("{:.4f}".format(per_cat[cat]) for cat in categories))
        logger.info("Flickr30k grounding recall:\n%s", "\n".join(rows))
        return score


def flickr_post_process(prediction, image_id, sentence_id, num_phrases, plus=1):
    """A `BoxList` (original image size, fields `scores`, `labels` = phrase index + `plus`) -> the evaluator's
    prediction dict: per phrase its boxes by descending score, each list ending with a [0, 0, 0, 0] box."""
    scores = prediction.get_field("scores")
    order = scores.argsort(descending=True, stable=True).tolist()
    boxes = prediction.bbox.tolist()
    labels = prediction.get_field("labels").tolist()
    out_boxes = [[] for _ in range(num_phrases)]
    out_scores = [[] for _ in range(num_phrases)]
    for i in order:
        out_boxes[labels[i] - plus].append(boxes[i])
        out_scores[labels[i] - plus].append(float(scores[i]))
    for boxes_i in out_boxes:
        boxes_i.append([0.0, 0.0, 0.0, 0.0])
    return {"image_id": image_id, "sentence_id": sentence_id, "boxes": out_boxes, "scores": out_scores}


def write_flickr_results(score, output_file_name):
    """The reference's Flickr `bbox.csv`: `metric, avg ` then `<metric>, <value> ` per entry."""
    rows = ["metric, avg "] + ["{}, {} ".format(metric, value) for metric, value in score.items()]
    with open(output_file_name, "w") as f:
        f.write("\n".join(rows) + "\n")
