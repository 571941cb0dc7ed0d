"""Self-training on the generated shapes: teacher -> pseudo-labels on captions-only images -> student.

    python tools/self_train.py [--output-dir OUTPUT/self_train] [--num-captions 600] [--pseudo-threshold 0.3]
                               [quickstart options] [KEY VALUE ...]
    python tools/quickstart.py --self-train [same options]

Stages (each skipped when its result file exists, so a stopped run continues where it stopped):

1. data: the quickstart's train / test splits and a captions-only split (``generate_captions_split``): images with
   captions that name their objects, unseen colour-shape combinations included, boxes withheld;
2. teacher: the quickstart model trained on the gold train split (``tools/quickstart.py``'s config and
   schedule), evaluated on the held-out split (AP50 on seen and unseen combinations);
3. pseudo-labels: ``tools/pseudo_label.py`` with the teacher on the captions-only split; the pseudo boxes are
   scored against the withheld ones (precision / recall: same colour-shape phrase and IoU >= 0.5);
4. student: the same model and schedule from scratch on gold + pseudo (a ``CaptionTSV`` entry added to
   ``DATASETS.TRAIN``), evaluated like the teacher.

``--output-dir`` receives ``data/``, ``teacher/``, ``pseudo/``, ``student/`` and ``self_train.json``; the run
ends with a table and the line ``self-train: teacher AP50_unseen=<t> student AP50_unseen=<s> ...``. A bad option
or input stops the run with one line on stderr and exit code 2 (``glip.utils.errors.run_tool``; ``--debug``: the
traceback too).
"""
import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils.errors import ConfigFileNotFoundError, UserError, run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.self_train")
TOOLS = Path(__file__).resolve().parent


def load_tool(name: str):
    """A sibling script of ``tools/`` as a module (``quickstart``, ``pseudo_label``)."""
    spec = importlib.util.spec_from_file_location("glip_tool_" + name, TOOLS / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    quickstart = load_tool("quickstart")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="OUTPUT/self_train", help="where every stage writes")
    parser.add_argument("--config-file", default=str(quickstart.SCRATCH_CONFIG),
                        help="the model / solver yaml (default: the from-scratch quickstart, as measured in README)")
    parser.add_argument("--num-train", type=int, default=600, help="generated gold training images")
    parser.add_argument("--num-test", type=int, default=100, help="generated held-out images")
    parser.add_argument("--num-captions", type=int, default=600, help="generated captions-only images")
    parser.add_argument("--seed", type=int, default=0, help="data seed (the training seed is SOLVER.SEED)")
    parser.add_argument("--image-size", type=int, default=160, help="side of the generated square images")
    parser.add_argument("--colours", type=_names, default=None, help="comma-separated object colours")
    parser.add_argument("--shapes", type=_names, default=None, help="comma-separated object shapes")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--pseudo-threshold", type=float, default=0.3,
                        help="pseudo boxes kept above this teacher score")
    parser.add_argument("--pseudo-batch-size", type=int, default=8, help="images per teacher forward")
    parser.add_argument("--caption-nms", type=float, default=0.5,
                        help="the student reads the pseudo-labels with DATASETS.FURTHER_SCREEN, CAPTION_CONF = "
                             "--pseudo-threshold and CAPTION_NMS = this (one NMS over all phrases of an image: an "
                             "object named by two phrases keeps the better one); <= 0: no NMS")
    parser.add_argument("--minutes", type=float, default=None, help="refused: a quickstart option")
    parser.add_argument("--demo-threshold", type=float, default=None, help="refused: a quickstart option")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    args.opts = [o for o in args.opts if o != "--"]
    for flag in ("minutes", "demo_threshold"):
        if getattr(args, flag) is not None:
            raise UserError("--{} is a quickstart option; the self-training loop has no time budget and draws "
                            "no demo".format(flag.replace("_", "-")))
    for name in ("num_train", "num_test", "num_captions", "pseudo_batch_size", "image_size"):
        if getattr(args, name) < 1:
            raise UserError("--{} must be >= 1, got {}".format(name.replace("_", "-"), getattr(args, name)))
    if not 0.0 <= args.pseudo_threshold < 1.0:
        raise UserError("--pseudo-threshold must be in [0, 1), got {}".format(args.pseudo_threshold))
    if not os.path.isfile(args.config_file):
        raise ConfigFileNotFoundError("config file not found: {}; check --config-file".format(args.config_file))
    return args


def _read(path: str):
    with open(path) as f:
        return json.load(f)


def _write(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def make_data(args, quickstart, data_root: str) -> dict:
    """The quickstart's splits plus the captions-only split (reused when made with the same arguments)."""
    from glip.data.datasets.synthetic import COLOURS, SHAPES, generate_captions_split

    meta = quickstart.generate_data(args, data_root)
    wanted = {"num_images": args.num_captions, "seed": args.seed, "image_size": args.image_size,
              "colours": list(args.colours or COLOURS), "shapes": list(args.shapes or SHAPES)}
    marker = os.path.join(data_root, "captions", "made.json")
    if os.path.isfile(marker) and _read(marker)["args"] == wanted:
        meta["captions"] = _read(marker)["paths"]
        return meta
    meta["captions"] = generate_captions_split(
        data_root, num_images=args.num_captions, seed=args.seed, image_size=(args.image_size, args.image_size),
        colours=wanted["colours"], shapes=wanted["shapes"])
    _write(marker, {"args": wanted, "paths": meta["captions"]})
    return meta


def train_and_evaluate(quickstart, cfg, stage_dir: str, gt_file: str) -> dict:
    """Train ``cfg`` (the quickstart's trainer), evaluate on the held-out split; ``stage_dir/results.json``."""
    from glip.utils import cli

    results_path = os.path.join(stage_dir, "results.json")
    if os.path.isfile(results_path):
        logger.info("Reusing %s", results_path)
        return _read(results_path)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    cfg.freeze()
    cli.save_config(cfg, os.path.join(cfg.OUTPUT_DIR, "config.yml"))
    start = time.time()
    model = quickstart.train_model(cfg)
    minutes = (time.time() - start) / 60
    metrics = quickstart.evaluate_model(cfg, model, os.path.join(stage_dir, "eval"), gt_file)
    results = {"metrics": metrics, "train_minutes": minutes, "iterations": cfg.SOLVER.MAX_ITER,
               "train": list(cfg.DATASETS.TRAIN)}
    _write(results_path, results)
    return results


def pseudo_label(args, teacher_dir: str, images: str, out_dir: str) -> dict:
    """``tools/pseudo_label.py`` with the teacher's saved config and final weights."""
    summary_path = os.path.join(out_dir, "summary.json")
    if os.path.isfile(summary_path):
        return _read(summary_path)
    argv = ["--config-file", os.path.join(teacher_dir, "train", "config.yml"),
            "--weight", os.path.join(teacher_dir, "train", "model_final.pth"), "--input", images,
            "--output-dir", out_dir, "--threshold", str(args.pseudo_threshold),
            "--batch-size", str(args.pseudo_batch_size), "--previews", "8"]
    if load_tool("pseudo_label").run(argv) != 0:
        raise RuntimeError("pseudo-labelling failed (see the log above)")
    return _read(summary_path)


def label_file(dataset_yaml: str) -> str:
    """The label TSV a caption dataset yaml names."""
    import yaml

    with open(dataset_yaml) as f:
        return os.path.join(os.path.dirname(dataset_yaml), yaml.safe_load(f)["label"])


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def phrase_combination(phrase: str, colours, shapes):
    """``"colour shape"`` named by a phrase ("a small red circle" -> "red circle"), None when it names none."""
    words = phrase.lower().split()
    colour = [w for w in words if w in colours]
    shape = [w for w in words if w.rstrip("s") in shapes]
    return "{} {}".format(colour[0], shape[0].rstrip("s")) if len(colour) == 1 and len(shape) == 1 else None


def _rows(label_tsv: str, screen=None):
    """``(key, caption, boxes, scores, spans)`` of each v1 label row; ``screen = (conf, nms)`` applies the
    caption dataset's ``FURTHER_SCREEN`` (``glip.data.caption_rules.screen_boxes``) first."""
    from glip.data.caption_rules import screen_boxes

    with open(label_tsv) as f:
        for line in f:
            key, text = line.rstrip("\n").split("\t")
            row = json.loads(text)
            boxes, scores, spans = row["bboxes"], row["scores"], row["tokens_positive"]
            if screen is not None:
                boxes, scores, spans = screen_boxes(boxes, scores, spans, screen[0], screen[1])
            yield key, row["caption"], boxes, scores, spans


def score_pseudo_labels(label_tsv: str, withheld_json: str, iou: float = 0.5, screen=None) -> dict:
    """Precision and recall (percent) of v1 pseudo boxes against the withheld boxes, overall and on seen / unseen
    combinations: a pseudo box is right when its phrase names the colour-shape of a not yet matched withheld box
    of its image with IoU >= ``iou`` (pseudo boxes visited by descending score). ``screen``: see :func:`_rows`."""
    gold = _read(withheld_json)
    names = {c["id"]: c["name"] for c in gold["categories"]}
    seen = {c["name"]: c.get("seen", True) for c in gold["categories"]}
    colours = {n.split()[0] for n in names.values()}
    shapes = {n.split()[1] for n in names.values()}
    stems = {im["id"]: os.path.splitext(im["file_name"])[0] for im in gold["images"]}
    objects = {}
    for ann in gold["annotations"]:
        x, y, w, h = ann["bbox"]
        objects.setdefault(stems[ann["image_id"]], []).append((names[ann["category_id"]], [x, y, x + w, y + h]))
    counts = {k: 0 for k in ("tp_seen", "tp_unseen", "pred_seen", "pred_unseen", "pred_other", "hit_seen",
                             "hit_unseen")}
    for key, caption, boxes, scores, spans in _rows(label_tsv, screen):
        gold_objects = objects.get(key, [])
        used = [False] * len(gold_objects)
        for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
            beg, end = spans[i][0]
            combo = phrase_combination(caption[beg:end], colours, shapes)
            kind = "other" if combo is None else ("seen" if seen.get(combo, True) else "unseen")
            counts["pred_" + kind] += 1
            best, best_iou = None, iou
            for j, (name, box) in enumerate(gold_objects):
                overlap = _iou(boxes[i], box)
                if not used[j] and name == combo and overlap >= best_iou:
                    best, best_iou = j, overlap
            if best is not None:
                used[best] = True
                counts["tp_" + kind] += 1
    total = {"seen": 0, "unseen": 0}
    for items in objects.values():
        for name, _ in items:
            total["seen" if seen[name] else "unseen"] += 1
    pct = (lambda a, b: 100.0 * a / b if b else 0.0)
    pred_all = counts["pred_seen"] + counts["pred_unseen"] + counts["pred_other"]
    tp_all = counts["tp_seen"] + counts["tp_unseen"]
    return {"precision": pct(tp_all, pred_all), "recall": pct(tp_all, total["seen"] + total["unseen"]),
            "precision_seen": pct(counts["tp_seen"], counts["pred_seen"]),
            "precision_unseen": pct(counts["tp_unseen"], counts["pred_unseen"]),
            "recall_seen": pct(counts["tp_seen"], total["seen"]),
            "recall_unseen": pct(counts["tp_unseen"], total["unseen"]),
            "pseudo_boxes": pred_all, "boxes_naming_no_combination": counts["pred_other"],
            "withheld_boxes": total["seen"] + total["unseen"]}


def student_config(quickstart, args, data_root: str, out_dir: str, pseudo_yaml: str):
    """The teacher's config with the pseudo-labelled captions added to ``DATASETS.TRAIN``."""
    cfg = quickstart.build_config(args.config_file, out_dir, data_root, args.opts)
    cfg.DATASETS.REGISTER["shapes_pseudo"] = type(cfg.DATASETS.REGISTER)(
        {"factory": "CaptionTSV", "yaml_file": pseudo_yaml})
    cfg.DATASETS.TRAIN = tuple(cfg.DATASETS.TRAIN) + ("shapes_pseudo",)
    if args.caption_nms > 0:
        cfg.DATASETS.FURTHER_SCREEN = True
        # The tool kept scores above the threshold already; CAPTION_CONF 0 would mean the dataset's default 0.5.
        cfg.DATASETS.CAPTION_CONF = max(args.pseudo_threshold, 1e-9)
        cfg.DATASETS.CAPTION_NMS = args.caption_nms
    return cfg


def format_report(report: dict) -> str:
    t, s, p = report["teacher"]["metrics"], report["student"]["metrics"], report["pseudo_quality"]
    rows = [("held-out AP50", "seen", "unseen", "all"),
            ("teacher (gold)", "{:.1f}".format(t["AP50_seen"]), "{:.1f}".format(t["AP50_unseen"]),
             "{:.1f}".format(t["AP50_all"])),
            ("student (gold + pseudo)", "{:.1f}".format(s["AP50_seen"]), "{:.1f}".format(s["AP50_unseen"]),
             "{:.1f}".format(s["AP50_all"])),
            ("pseudo precision", "{:.1f}".format(p["precision_seen"]), "{:.1f}".format(p["precision_unseen"]),
             "{:.1f}".format(p["precision"])),
            ("pseudo recall", "{:.1f}".format(p["recall_seen"]), "{:.1f}".format(p["recall_unseen"]),
             "{:.1f}".format(p["recall"]))]
    q = report["pseudo_quality_as_trained"]
    rows += [("  after CAPTION_NMS {}: precision".format(report["caption_nms"]), "{:.1f}".format(q["precision_seen"]),
              "{:.1f}".format(q["precision_unseen"]), "{:.1f}".format(q["precision"])),
             ("  after CAPTION_NMS {}: recall".format(report["caption_nms"]), "{:.1f}".format(q["recall_seen"]),
              "{:.1f}".format(q["recall_unseen"]), "{:.1f}".format(q["recall"]))]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    summary = report["pseudo_summary"]
    lines.append("pseudo-labels: {} images, {} boxes kept (threshold {}), {} naming no colour-shape".format(
        summary["images"], summary["boxes_kept"], report["pseudo_threshold"], p["boxes_naming_no_combination"]))
    lines.append("minutes: " + ", ".join("{} {:.1f}".format(k, v) for k, v in report["minutes"].items()))
    return "\n".join(lines)


def run(argv=None) -> int:
    """The whole loop (see the module docstring); returns the exit code."""
    args = parse_args(argv)
    quickstart = load_tool("quickstart")
    start = time.time()
    output_dir = os.path.abspath(args.output_dir)
    data_root = os.path.join(output_dir, "data", quickstart.DATA_SUBDIR)
    os.makedirs(output_dir, exist_ok=True)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    from glip.utils import cli

    cli.setup_run_logger(output_dir)
    minutes = {}
    meta = make_data(args, quickstart, data_root)
    minutes["data"] = (time.time() - start) / 60
    gt_file = meta["test"]["detection"]

    t = time.time()
    teacher_dir = os.path.join(output_dir, "teacher")
    teacher = train_and_evaluate(quickstart, quickstart.build_config(args.config_file, teacher_dir, data_root,
                                                                     args.opts), teacher_dir, gt_file)
    minutes["teacher"] = (time.time() - t) / 60
    t = time.time()
    pseudo_dir = os.path.join(output_dir, "pseudo")
    summary = pseudo_label(args, teacher_dir, meta["captions"]["images"], pseudo_dir)
    labels = label_file(os.path.join(pseudo_dir, "dataset.yaml"))
    quality = score_pseudo_labels(labels, meta["captions"]["detection"])
    screened = score_pseudo_labels(labels, meta["captions"]["detection"],
                                   screen=(args.pseudo_threshold, args.caption_nms) if args.caption_nms > 0 else None)
    minutes["pseudo_label"] = (time.time() - t) / 60
    t = time.time()
    student_dir = os.path.join(output_dir, "student")
    student = train_and_evaluate(quickstart, student_config(quickstart, args, data_root, student_dir,
                                                            os.path.join(pseudo_dir, "dataset.yaml")),
                                 student_dir, gt_file)
    minutes["student"] = (time.time() - t) / 60
    minutes["total"] = (time.time() - start) / 60
    report = {"teacher": teacher, "student": student, "pseudo_summary": summary, "pseudo_quality": quality,
              "pseudo_quality_as_trained": screened, "caption_nms": args.caption_nms,
              "pseudo_threshold": args.pseudo_threshold, "minutes": minutes, "seen": meta["seen"],
              "unseen": meta["unseen"], "num_captions": args.num_captions}
    _write(os.path.join(output_dir, "self_train.json"), report)
    print(format_report(report))
    print("self-train: teacher AP50_unseen={:.1f} student AP50_unseen={:.1f} teacher AP50_seen={:.1f} "
          "student AP50_seen={:.1f} pseudo_precision={:.1f} pseudo_recall={:.1f} minutes={:.1f}".format(
              teacher["metrics"]["AP50_unseen"], student["metrics"]["AP50_unseen"], teacher["metrics"]["AP50_seen"],
              student["metrics"]["AP50_seen"], quality["precision"], quality["recall"], minutes["total"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(run))
