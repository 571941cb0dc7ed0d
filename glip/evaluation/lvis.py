"""LVIS v1 box evaluation: the federated LVIS protocol and the "Fixed AP" variant, without the `lvis` package.

Protocol (LVIS API semantics, box IoU without the +1 rule):
- annotations and detections whose area (json `area`; detection w * h) is not in (0, inf) are dropped, as
  the API's `get_ann_ids` does: zero-width or inverted detections are no false positives;
- a detection of category c on image I is evaluated only if c is annotated on I (a gt box exists) or c is in
  I's `neg_category_ids` (verified absent); others are dropped entirely;
- an unmatched detection of a category in I's `not_exhaustive_category_ids` is ignored (not a false positive);
- greedy matching per (image, category) at IoU 0.50:0.95, 101 recall points, area ranges all/small/medium/large
  (gt area from the json, detection area w*h), APr/APc/APf average the categories of `frequency` "r"/"c"/"f".
Standard AP keeps at most 300 detections per image; Fixed AP ("Evaluating Large-Vocabulary Object Detectors:
The Devil is in the Details") keeps instead the top `topk` (10000) detections of each category over the whole
split with no per-image limit, as the reference's `LvisEvaluatorFixedAP` (its `LVIS_USE_NORMAL_AP` switch).
`LvisEvaluator` is the protocol "lvis" of `glip.evaluation.evaluator`.
"""
import heapq
import itertools
import json
import logging
import os
from collections import OrderedDict, defaultdict

import numpy as np

from glip.evaluation.evaluator import DatasetEvaluator, as_int, original_size, register_evaluator, target_value
from glip.utils.comm import all_gather, is_main_process, synchronize

logger = logging.getLogger(__name__)

AREA_RANGES = ((0 ** 2, 1e5 ** 2), (0 ** 2, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2))
AREA_LABELS = ("all", "small", "medium", "large")
FREQUENCIES = ("r", "c", "f")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


class LvisGroundTruth:
    """Index of an LVIS json (path or loaded dict): `imgs`, `cats` by id, `anns` list, sorted `img_ids`/`cat_ids`."""

    def __init__(self, annotations):
        if isinstance(annotations, str):
            with open(annotations) as f:
                annotations = json.load(f)
        self.dataset = annotations
        self.imgs = {img["id"]: img for img in annotations["images"]}
        self.cats = {cat["id"]: cat for cat in annotations["categories"]}
        self.anns = list(annotations.get("annotations", []))
        self.img_ids = sorted(self.imgs)
        self.cat_ids = sorted(self.cats)


def xyxy_to_xywh(boxes):
    """(N, 4) x1y1x2y2 -> x, y, w, h with w = x2 - x1 (no +1, as the reference's LVIS path)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def limit_dets_per_image(results, max_dets):
    """Keep the `max_dets` highest-scoring detections of every image (all of them if `max_dets < 0`)."""
    if max_dets < 0:
        return list(results)
    by_image = defaultdict(list)
    for det in results:
        by_image[det["image_id"]].append(det)
    out = []
    for dets in by_image.values():
        if len(dets) > max_dets:
            dets = sorted(dets, key=lambda d: d["score"], reverse=True)[:max_dets]
        out.extend(dets)
    return out


def _box_iou_xywh(dts, gts):
    """(D, 4) x (G, 4) xywh boxes -> (D, G) IoU (pycocotools' non-crowd box IoU)."""
    import pycocotools.mask as mask_util

    return np.asarray(mask_util.iou(np.asarray(dts, dtype=np.float64).reshape(-1, 4),
                                    np.asarray(gts, dtype=np.float64).reshape(-1, 4),
                                    [0] * len(gts))).reshape(len(dts), len(gts))


def _positive_area(ann) -> bool:
    """0 < area < inf, the LVIS API's default area range (`LVIS.get_ann_ids`, strict bounds)."""
    return 0 < ann["area"] < float("inf")


class LvisEval:
    """LVIS box evaluation of `results` (list of `{"image_id", "category_id", "bbox": xywh, "score"}`).

    `max_dets` is the per-image limit applied to `results` (300 standard, -1 for Fixed AP). `run()` returns
    `OrderedDict` AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@N, ARs@N, ARm@N, ARl@N; `precision` is
    `(T=10, R=101, K, A=4)` and `recall` `(T, K, A)`, -1 where a category has no gt.
    """

    def __init__(self, gt, results, max_dets=300):
        self.gt = gt if isinstance(gt, LvisGroundTruth) else LvisGroundTruth(gt)
        self.max_dets = max_dets
        self.dts = []
        for idx, det in enumerate(limit_dets_per_image(results, max_dets)):
            det = dict(det)
            x, y, w, h = det["bbox"]
            det["area"] = w * h
            det["id"] = idx + 1
            self.dts.append(det)
        self.results = OrderedDict()
        self.precision = None
        self.recall = None

    def _prepare(self):
        """Group gts and the evaluable detections by (image, category); annotations and detections whose area is
        not in (0, inf) are dropped first (the API's `get_ann_ids` area filter), so a zero-area gt does not make
        its category present and a zero-width or inverted detection is no false positive."""
        img_ids, cat_ids = set(self.gt.img_ids), set(self.gt.cat_ids)
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        present = defaultdict(set)
        for ann in self.gt.anns:
            if ann["image_id"] in img_ids and ann["category_id"] in cat_ids and _positive_area(ann):
                self._gts[ann["image_id"], ann["category_id"]].append(ann)
                present[ann["image_id"]].add(ann["category_id"])
        negative = {i: set(self.gt.imgs[i].get("neg_category_ids", [])) for i in img_ids}
        self._not_exhaustive = {i: set(self.gt.imgs[i].get("not_exhaustive_category_ids", [])) for i in img_ids}
        for det in self.dts:
            img, cat = det["image_id"], det["category_id"]
            if img not in img_ids or cat not in cat_ids or not _positive_area(det):
                continue
            if cat in negative[img] or cat in present[img]:
                self._dts[img, cat].append(det)

    def _evaluate_img(self, img_id, cat_id, area_rng, ious):
        """Greedy matching of one (image, category) in one area range; `ious` is (D sorted by score, G)."""
        gts, dts = self._gts[img_id, cat_id], self._dts[img_id, cat_id]
        gt_ignore = np.array([int(g.get("ignore", 0) or not (area_rng[0] <= g["area"] <= area_rng[1]))
                              for g in gts], dtype=np.int64)
        gt_order = np.argsort(gt_ignore, kind="mergesort")
        gt_ignore = gt_ignore[gt_order]
        ious = ious[:, gt_order] if ious.size else ious
        num_thrs, num_gt, num_dt = len(IOU_THRESHOLDS), len(gts), len(dts)
        gt_matched = np.zeros((num_thrs, num_gt), dtype=bool)
        dt_matched = np.zeros((num_thrs, num_dt), dtype=bool)
        dt_ignore = np.zeros((num_thrs, num_dt), dtype=bool)
        if num_gt and num_dt:
            for t, thr in enumerate(IOU_THRESHOLDS):
                for d in range(num_dt):
                    best, match = min(thr, 1 - 1e-10), -1
                    for g in range(num_gt):
                        if gt_matched[t, g]:
                            continue
                        if match > -1 and gt_ignore[match] == 0 and gt_ignore[g] == 1:
                            break
                        if ious[d, g] < best:
                            continue
                        best, match = ious[d, g], g
                    if match == -1:
                        continue
                    dt_ignore[t, d] = bool(gt_ignore[match])
                    dt_matched[t, d] = gts[gt_order[match]]["id"] != 0  # the API records the gt's id
                    gt_matched[t, match] = True
        not_exhaustive = self._not_exhaustive[img_id]
        ignorable = np.array([d["area"] < area_rng[0] or d["area"] > area_rng[1] or
                              d["category_id"] in not_exhaustive for d in dts], dtype=bool).reshape(1, num_dt)
        dt_ignore = dt_ignore | (~dt_matched & ignorable)
        return {"scores": np.array([d["score"] for d in dts], dtype=np.float64), "matched": dt_matched,
                "ignore": dt_ignore, "gt_ignore": gt_ignore}

    def evaluate(self):
        """Per (category, area, image) matching; stores `self.eval_imgs[(cat, area_idx)]` = list over images."""
        self._prepare()
        keys = sorted(set(self._gts) | set(self._dts), key=lambda k: (k[1], k[0]))
        self.eval_imgs = defaultdict(list)
        for img_id, cat_id in keys:
            order = np.argsort([-d["score"] for d in self._dts[img_id, cat_id]], kind="mergesort")
            self._dts[img_id, cat_id] = [self._dts[img_id, cat_id][i] for i in order]
            dts, gts = self._dts[img_id, cat_id], self._gts[img_id, cat_id]
            ious = _box_iou_xywh([d["bbox"] for d in dts], [g["bbox"] for g in gts]) if dts and gts \
                else np.zeros((0, 0))
            for area_idx, area_rng in enumerate(AREA_RANGES):
                self.eval_imgs[cat_id, area_idx].append(self._evaluate_img(img_id, cat_id, area_rng, ious))

    def accumulate(self):
        """Precision at the 101 recall points and final recall, per (IoU, category, area)."""
        num_thrs, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
        cat_ids = self.gt.cat_ids
        precision = -np.ones((num_thrs, num_rec, len(cat_ids), len(AREA_RANGES)))
        recall = -np.ones((num_thrs, len(cat_ids), len(AREA_RANGES)))
        for k, cat_id in enumerate(cat_ids):
            for a in range(len(AREA_RANGES)):
                evals = self.eval_imgs.get((cat_id, a))
                if not evals:
                    continue
                scores = np.concatenate([e["scores"] for e in evals])
                order = np.argsort(-scores, kind="mergesort")
                matched = np.concatenate([e["matched"] for e in evals], axis=1)[:, order]
                ignore = np.concatenate([e["ignore"] for e in evals], axis=1)[:, order]
                num_gt = int(np.count_nonzero(np.concatenate([e["gt_ignore"] for e in evals]) == 0))
                if num_gt == 0:
                    continue
                tp_sum = np.cumsum(matched & ~ignore, axis=1).astype(np.float64)
                fp_sum = np.cumsum(~matched & ~ignore, axis=1).astype(np.float64)
                for t in range(num_thrs):
                    tp, fp = tp_sum[t], fp_sum[t]
                    rc = tp / num_gt
                    recall[t, k, a] = rc[-1] if len(tp) else 0
                    pr = tp / (fp + tp + np.spacing(1))
                    pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
                    inds = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                    values = np.zeros(num_rec)
                    valid = inds < len(pr)  # recall points never reached keep precision 0
                    values[valid] = pr[inds[valid]]
                    precision[t, :, k, a] = values
        self.precision, self.recall = precision, recall

    def _freq_groups(self):
        groups = [[] for _ in FREQUENCIES]
        for k, cat_id in enumerate(self.gt.cat_ids):
            frequency = self.gt.cats[cat_id].get("frequency")
            if frequency in FREQUENCIES:
                groups[FREQUENCIES.index(frequency)].append(k)
        return groups

    def _mean(self, kind, iou_thr=None, area="all", freq=None):
        a = AREA_LABELS.index(area)
        values = self.precision if kind == "ap" else self.recall
        if iou_thr is not None:
            values = values[np.where(np.isclose(IOU_THRESHOLDS, iou_thr))[0]]
        if kind == "ap":
            values = values[:, :, :, a]
            if freq is not None:
                values = values[:, :, self._freq_groups()[FREQUENCIES.index(freq)]]
        else:
            values = values[:, :, a]
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def summarize(self):
        """Fill and return `self.results` (see class doc)."""
        res = self.results
        res["AP"] = self._mean("ap")
        res["AP50"] = self._mean("ap", iou_thr=0.50)
        res["AP75"] = self._mean("ap", iou_thr=0.75)
        for area in ("small", "medium", "large"):
            res["AP" + area[0]] = self._mean("ap", area=area)
        for freq in FREQUENCIES:
            res["AP" + freq] = self._mean("ap", freq=freq)
        res["AR@{}".format(self.max_dets)] = self._mean("ar")
        for area in ("small", "medium", "large"):
            res["AR{}@{}".format(area[0], self.max_dets)] = self._mean("ar", area=area)
        return res

    def run(self):
        self.evaluate()
        self.accumulate()
        return self.summarize()

    def result_lines(self):
        """The LVIS API's printed table, one line per metric (e.g. `... catIds=  r] = 0.123`)."""
        template = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} catIds={:>3s}] = {:0.3f}"
        lines = []
        for key, value in self.results.items():
            title, kind = ("Average Precision", "(AP)") if "AP" in key else ("Average Recall", "(AR)")
            if len(key) > 2 and key[2].isdigit():
                iou = "{:0.2f}".format(float(key[2:]) / 100)
            else:
                iou = "{:0.2f}:{:0.2f}".format(IOU_THRESHOLDS[0], IOU_THRESHOLDS[-1])
            group = key[2] if len(key) > 2 and key[2] in FREQUENCIES else "all"
            area = key[2] if len(key) > 2 and key[2] in ("s", "m", "l") else "all"
            lines.append(template.format(title, kind, iou, area, self.max_dets, group, value))
        return lines


class LvisFixedAPEvaluator:
    """Streams per-image predictions and evaluates LVIS with Fixed AP (default) or standard AP.

    `update([(image_id, {"boxes": (N, 4) xyxy in original coordinates, "scores": (N,), "labels": (N,) LVIS
    category ids}), ...])`; `synchronize_between_processes()` gathers across ranks; `summarize()` returns the
    printed lines (for `write_lvis_results`) on the main process and stores the metrics in `self.results`.
    """

    def __init__(self, gt, topk=10000, fixed_ap=True, max_dets_per_image=300):
        self.gt = gt if isinstance(gt, LvisGroundTruth) else LvisGroundTruth(gt)
        self.topk = topk
        self.fixed_ap = fixed_ap
        self.max_dets_per_image = max_dets_per_image
        self.by_cat = {}
        self.detections = []
        self.results = None

    @staticmethod
    def prepare(predictions):
        out = []
        for image_id, prediction in predictions:
            if len(prediction["scores"]) == 0:
                continue
            boxes = xyxy_to_xywh(_numpy(prediction["boxes"])).tolist()
            scores = _numpy(prediction["scores"]).tolist()
            labels = _numpy(prediction["labels"]).tolist()
            out.extend({"image_id": image_id, "category_id": int(label), "bbox": box, "score": score}
                       for box, score, label in zip(boxes, scores, labels))
        return out

    def update(self, predictions):
        detections = self.prepare(predictions)
        if self.fixed_ap:
            by_cat = defaultdict(list)
            for det in detections:
                by_cat[det["category_id"]].append(det)
            for cat, dets in by_cat.items():
                ranked = sorted(dets, key=lambda d: d["score"], reverse=True)[:self.topk]
                merged = heapq.merge(self.by_cat.get(cat, []), ranked, key=lambda d: d["score"], reverse=True)
                self.by_cat[cat] = list(itertools.islice(merged, self.topk))
        else:
            by_image = defaultdict(list)
            for det in detections:
                by_image[det["image_id"]].append(det)
            for dets in by_image.values():
                self.detections.extend(sorted(dets, key=lambda d: d["score"], reverse=True)
                                       [:self.max_dets_per_image])

    def synchronize_between_processes(self):
        if self.fixed_ap:
            merged = defaultdict(list)
            for part in all_gather(self.by_cat):
                for cat, dets in part.items():
                    merged[cat].extend(dets)
            self.by_cat = dict(merged)
        else:
            self.detections = [d for part in all_gather(self.detections) for d in part]

    def summarize(self):
        if not is_main_process():
            return None
        if self.fixed_ap:
            results, short = [], 0
            for dets in self.by_cat.values():
                short += len(dets) < self.topk
                results.extend(sorted(dets, key=lambda d: d["score"], reverse=True)[:self.topk])
            if short:
                logger.info("%d classes had less than %d detections; more detections per class raise Fixed AP",
                            short, self.topk)
            lvis_eval = LvisEval(self.gt, results, max_dets=-1)
        else:
            lvis_eval = LvisEval(self.gt, self.detections, max_dets=self.max_dets_per_image)
        self.results = lvis_eval.run()
        lines = lvis_eval.result_lines()
        logger.info("LVIS %s AP:\n%s", "fixed" if self.fixed_ap else "standard", "\n".join(lines))
        return lines


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def write_lvis_results(lines, output_file_name):
    """The reference's LVIS `bbox.csv`: `metric, avg ` then `<metric label>, <value> ` per line."""
    rows = ["metric, avg "]
    for line in lines:
        parts = line.split(" ")
        rows.append(" ".join(parts[:-2]) + ", " + parts[-1] + " ")
    with open(output_file_name, "w") as f:
        f.write("\n".join(rows) + "\n")


def lvis_inputs(dataset, indices, targets, outputs):
    """`[(json image id, {"boxes": (N, 4) xyxy, "scores", "labels"})]` of one batch, boxes resized to the original
    image size (the target's `orig_size`, else the dataset's image info); the image id is the target's
    `image_id`, else `dataset.id_to_img_map[index]`."""
    items = []
    for output, target, index in zip(outputs, targets, indices):
        output = output.resize(original_size(target, dataset, index))
        image_id = target_value(target, "image_id")
        image_id = dataset.id_to_img_map[index] if image_id is None else as_int(image_id)
        output = output.convert("xyxy")
        items.append((image_id, {"scores": output.get_field("scores"), "labels": output.get_field("labels"),
                                 "boxes": output.bbox}))
    return items


@register_evaluator("lvis")
class LvisEvaluator(DatasetEvaluator):
    """LVIS box AP of a dataset with `ann_file` (the LVIS json; else `coco.dataset`), `id_to_img_map` and
    `get_img_info`; predictions' `labels` are LVIS category ids.

    Streams every batch into a `LvisFixedAPEvaluator` (Fixed AP unless `fixed_ap=False`), gathers it over
    processes, writes `<output_folder>/bbox.csv`. Metrics AP, AP50, AP75, APs/m/l, APr/c/f, AR...; primary `AP`.
    """

    primary_metric = "AP"

    def __init__(self, dataset, output_folder=None, fixed_ap=True, topk=10000):
        self.dataset = dataset
        self.output_folder = output_folder
        self.gt = LvisGroundTruth(getattr(dataset, "ann_file", None) or dataset.coco.dataset)
        self.fixed_ap = fixed_ap
        self.topk = topk
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset, output_folder=None, **_):
        """Fixed AP unless `DATASETS.LVIS_USE_NORMAL_AP`."""
        return cls(dataset, output_folder, fixed_ap=not cfg.DATASETS.LVIS_USE_NORMAL_AP)

    def reset(self):
        self._accumulator = LvisFixedAPEvaluator(self.gt, topk=self.topk, fixed_ap=self.fixed_ap)

    def process(self, indices, targets, outputs):
        self._accumulator.update(lvis_inputs(self.dataset, [as_int(i) for i in indices], targets, outputs))

    def evaluate(self):
        self._accumulator.synchronize_between_processes()
        lines = self._accumulator.summarize()
        result = None
        if is_main_process():
            if self.output_folder and lines is not None:
                os.makedirs(self.output_folder, exist_ok=True)
                write_lvis_results(lines, os.path.join(self.output_folder, "bbox.csv"))
            result = self.result(self._accumulator.results)
        synchronize()
        return result
