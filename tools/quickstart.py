"""Quickstart: train and evaluate a small GLIP on a generated grounding dataset, on a CPU, in minutes.

    python tools/quickstart.py [--output-dir OUTPUT/quickstart] [--threads N] [--minutes M] [KEY VALUE ...]

Steps: generate the coloured-shapes data (``glip.data.datasets.synthetic``; by default 30% of the training
objects in an extra colour named by its shape alone or an extra shape named by its colour alone, so that shape
and colour features come apart) -> train the model of
``configs/quickstart/glip_tiny_shapes_minilm.yaml`` (the pretrained all-MiniLM-L6-v2 text encoder; the
from-scratch 2-layer BERT: ``glip_tiny_shapes.yaml``) through the trainer of
``tools/train_net.py`` (``glip.engine.run.train``) -> evaluate on the held-out split with the COCO evaluation
(pycocotools), AP50 separately on colour-shape combinations seen in training and on the never-seen ones -> draw
the demo's boxes and phrases on a held-out image. It ends with a table (AP and minutes per phase), the commands
to run next, and the line ``quickstart: AP50_seen=<x> AP50_unseen=<y> minutes=<m>``.

``--minutes M`` fits the run into M minutes: a few training iterations are timed first and ``SOLVER.MAX_ITER`` is
cut (the LR steps, fractions of it, follow) so that data + training + evaluation + demo end in time; what was cut
is logged and printed.

``--output-dir`` receives ``data/synthetic_shapes`` (images + COCO / MDETR json), ``train/`` (log.txt, config.yml,
model_final.pth, tensorboard events), ``eval/`` (bbox.json, bbox.csv, ...), ``demo.png`` and ``results.json``.
"""
import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils.errors import run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.quickstart")

REPO = Path(__file__).resolve().parents[1]
MINILM_CONFIG = REPO / "configs" / "quickstart" / "glip_tiny_shapes_minilm.yaml"  # pretrained all-MiniLM-L6-v2
SCRATCH_CONFIG = REPO / "configs" / "quickstart" / "glip_tiny_shapes.yaml"  # 2-layer BERT trained from scratch
DEFAULT_CONFIG = MINILM_CONFIG
DATA_SUBDIR = "synthetic_shapes"
# Evaluation + demo time per held-out image, in training iterations (measured 0.07-0.12 with the default model on
# 2 cores, idle and busy; fit_budget keeps this margin for them).
EVAL_ITERATIONS_PER_IMAGE = 0.2


def _names(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    from glip.data.datasets.synthetic import DEFAULT_UNNAMED_PROB, UNNAMED_COLOURS, UNNAMED_SHAPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="OUTPUT/quickstart", help="where data, model and results go")
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG), help="the model / solver yaml")
    parser.add_argument("--num-train", type=int, default=600, help="generated training images")
    parser.add_argument("--num-test", type=int, default=100, help="generated held-out images")
    parser.add_argument("--seed", type=int, default=0, help="data seed (the training seed is SOLVER.SEED)")
    parser.add_argument("--image-size", type=int, default=160, help="side of the generated square images")
    parser.add_argument("--colours", type=_names, default=None,
                        help="comma-separated object colours (default: all of glip.data.datasets.synthetic.COLOURS)")
    parser.add_argument("--shapes", type=_names, default=None,
                        help="comma-separated object shapes (default: all of glip.data.datasets.synthetic.SHAPES)")
    parser.add_argument("--unnamed-colours", type=_names, default=list(UNNAMED_COLOURS),
                        help="comma-separated extra colours (of glip.data.datasets.synthetic.UNNAMED_COLOURS) that "
                             "training objects are drawn in, named by their shape alone (default: all of them, "
                             "{}; '' for none)".format(",".join(UNNAMED_COLOURS)))
    parser.add_argument("--unnamed-shapes", type=_names, default=list(UNNAMED_SHAPES),
                        help="comma-separated extra shapes (of glip.data.datasets.synthetic.UNNAMED_SHAPES) that "
                             "training objects have, named by their colour alone ('red shape'; default: all of "
                             "them, {}; '' for none)".format(",".join(UNNAMED_SHAPES)))
    parser.add_argument("--unnamed-prob", type=float, default=None,
                        help="with unnamed colours / shapes, the probability of a training object being such a one "
                             "(default {}; refused when both lists are empty)".format(DEFAULT_UNNAMED_PROB))
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is much faster on a busy shared machine")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="time budget of the whole run in minutes (0: the config's schedule as it is); the "
                             "training iterations are cut to fit, measured on this machine now")
    parser.add_argument("--demo-threshold", type=float, default=0.25,
                        help="score threshold of the demo drawing (and of the 'drawn at the demo threshold' line, "
                             "over the whole held-out split); names of unseen combinations score ~0.25-0.5")
    parser.add_argument("--self-train", action="store_true",
                        help="run the self-training loop instead (tools/self_train.py: teacher -> pseudo-labels "
                             "-> student; its options apply)")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def package_path(value: str) -> str:
    """An existing path as given (absolute or relative to the working directory), else relative to the folder
    holding the ``glip`` package (so ``glip/assets/...`` in a yaml works from any directory)."""
    if not value or os.path.isabs(value):
        return value
    if os.path.exists(value):
        return os.path.abspath(value)
    import glip

    candidate = Path(glip.__file__).resolve().parents[1] / value
    return str(candidate) if candidate.exists() else value


def build_config(config_file: str, output_dir: str, data_root: str, opts=()):
    """The merged config: dataset paths pointing into ``data_root``, the language model folder resolved,
    ``OUTPUT_DIR`` = ``output_dir/train``; ``opts`` last."""
    from glip.config import cfg as default_cfg

    cfg = default_cfg.clone()
    cfg.defrost()
    cfg.merge_from_file(config_file)
    for name, entry in cfg.DATASETS.REGISTER.items():
        for key, value in entry.items():
            if isinstance(value, str) and value.startswith(DATA_SUBDIR + "/"):
                entry[key] = os.path.join(data_root, value[len(DATA_SUBDIR) + 1:])
    lang = cfg.MODEL.LANGUAGE_BACKBONE
    lang.MODEL_TYPE = package_path(lang.MODEL_TYPE)
    lang.TOKENIZER_TYPE = package_path(lang.TOKENIZER_TYPE)
    cfg.OUTPUT_DIR = os.path.join(output_dir, "train")
    cfg.merge_from_list(list(opts))
    from glip.utils.cli import audit, settle_device

    audit(cfg, training=True)
    return settle_device(cfg)


def generate_data(args, data_root: str) -> dict:
    """The synthetic dataset under ``data_root`` (reused when ``meta.json`` says it was made the same way)."""
    from glip.data.datasets.synthetic import (COLOURS, DEFAULT_UNNAMED_PROB, SHAPES, generate_synthetic_dataset,
                                              split_paths)

    colours = list(args.colours or COLOURS)
    shapes = list(args.shapes or SHAPES)
    unnamed = list(getattr(args, "unnamed_colours", None) or [])  # tools/self_train.py's arguments have none
    unnamed_shapes = list(getattr(args, "unnamed_shapes", None) or [])
    unnamed_prob = getattr(args, "unnamed_prob", None)
    if unnamed_prob is not None and not (unnamed or unnamed_shapes):
        raise ValueError("--unnamed-prob {} needs unnamed colours or shapes (--unnamed-colours and --unnamed-shapes "
                         "are both empty)".format(unnamed_prob))
    if not (unnamed or unnamed_shapes):
        unnamed_prob = 0.0
    elif unnamed_prob is None:
        unnamed_prob = DEFAULT_UNNAMED_PROB
    wanted = {"seed": args.seed, "num_train": args.num_train, "num_test": args.num_test,
              "image_size": [args.image_size, args.image_size], "colours": colours, "shapes": shapes,
              "unnamed_colours": unnamed, "unnamed_shapes": unnamed_shapes, "unnamed_prob": unnamed_prob}
    meta_path = os.path.join(data_root, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in wanted.items()):
            logger.info("Reusing the generated data in %s", data_root)
            meta.update({split: split_paths(os.path.join(data_root, split)) for split in ("train", "test")})
            return meta
    return generate_synthetic_dataset(data_root, num_train=args.num_train, num_test=args.num_test, seed=args.seed,
                                      image_size=(args.image_size, args.image_size), colours=colours, shapes=shapes,
                                      unnamed_colours=unnamed, unnamed_shapes=unnamed_shapes,
                                      unnamed_prob=unnamed_prob)


def has_language_weights(model_type: str) -> bool:
    """Whether MODEL_TYPE resolves to pretrained weights (the MiniLM package folder) or only to a config (the
    from-scratch BERT of ``glip/assets/bert-tiny-uncased``)."""
    from glip.text.pretrained import WEIGHT_FILES, resolve_pretrained

    try:
        resolve_pretrained(model_type, WEIGHT_FILES, what="BERT weights")
    except FileNotFoundError:
        return False
    return True


def train_model(cfg):
    """Train with ``glip.engine.run.train`` (tensorboard on), starting the text encoder from its pretrained
    weights when MODEL_TYPE has them, else from random weights."""
    from glip.engine.run import seed_everything, train

    pretrained = has_language_weights(cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE)
    logger.info("Text encoder %s: %s", cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE,
                "pretrained weights" if pretrained else "no weights found, trained from random initialisation")
    seed_everything(cfg.SOLVER.SEED)
    model = train(cfg, use_tensorboard=True, pretrained_language=pretrained)
    cache = getattr(model, "text_cache", None)
    if cache is not None:
        logger.info("Frozen text encoder cache: %d caption rows encoded, %d served from the cache (%d kept)",
                    cache.misses, cache.hits, len(cache))
    return model


def measure_seconds_per_iteration(cfg, iterations: int = 6) -> float:
    """Median seconds of one training iteration of ``cfg``'s model and data on this machine now, timed with the
    trainer itself (``glip.engine.trainer.Trainer``, nothing saved) on a throw-away model. Run before training is
    seeded."""
    import statistics

    from glip.data.build import make_data_loader
    from glip.engine.checkpointer import Checkpointer
    from glip.engine.hooks import HookBase
    from glip.engine.run import build_model_on_device, prepare_for_training
    from glip.engine.trainer import Trainer, train_options
    from glip.solver.build import make_lr_scheduler, make_optimizer

    class StepTimes(HookBase):
        def __init__(self):
            self.seconds = []

        def after_step(self, trainer):
            self.seconds.append(trainer.last_step.batch_time)

    probe = cfg.clone()
    probe.defrost()
    probe.SOLVER.MAX_ITER, probe.SOLVER.MAX_EPOCH = iterations, 0
    model, device = build_model_on_device(probe)
    model = prepare_for_training(probe, model)
    loader = make_data_loader(probe, is_train=True, is_distributed=False, start_iter=0)
    optimizer = make_optimizer(probe, model)
    options = train_options(probe, max_iter=iterations)
    times = StepTimes()
    scheduler = make_lr_scheduler(probe, optimizer, max_iter=iterations)
    trainer = Trainer(model, optimizer, scheduler, Checkpointer(model, save_dir=""), device, options, [times])
    trainer.train(loader, {"iteration": 0})
    return float(statistics.median(times.seconds[1:] or times.seconds))


def plan_iterations(max_iter: int, seconds_per_iter: float, budget_minutes: float, spent_minutes: float,
                    eval_minutes: float, min_iter: int = 50):
    """Training iterations that fit ``budget_minutes``: what is left after ``spent_minutes`` (data, timing) and
    the expected ``eval_minutes`` (evaluation + demo), divided by ``seconds_per_iter``; never more than the
    config's ``max_iter`` nor fewer than ``min_iter``. Returns ``(iterations, note)``, ``note`` saying what was cut
    (empty when nothing was)."""
    left_seconds = (budget_minutes - spent_minutes - eval_minutes) * 60
    fits = int(left_seconds / seconds_per_iter + 1e-6) if seconds_per_iter > 0 else max_iter
    iterations = max(min_iter, min(max_iter, fits))
    if iterations >= max_iter:
        return max_iter, ""
    note = ("--minutes {:g}: training cut from {} to {} iterations ({:.2f} s per iteration measured now; "
            "{:.1f} min spent, {:.1f} min kept for evaluation and demo); the LR steps scale with it and AP is "
            "lower than with the full schedule".format(budget_minutes, max_iter, iterations, seconds_per_iter,
                                                      spent_minutes, eval_minutes))
    if iterations > fits:
        note += "; even {} iterations (the minimum) do not fit the budget".format(min_iter)
    return iterations, note


def ap50_by_split(gt_file: str, results_file: str) -> dict:
    """COCO AP / AP50 over all categories and AP50 over the seen and the unseen ones (``"seen"`` flag of each
    category in the held-out json), from a COCO results json. Values in percent."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        gt.dataset.setdefault("info", {})
        with open(results_file) as f:
            results = json.load(f)
        dt = gt.loadRes(results) if results else None
    subsets = {"all": sorted(gt.getCatIds()),
               "seen": sorted(c["id"] for c in gt.dataset["categories"] if c.get("seen", True)),
               "unseen": sorted(c["id"] for c in gt.dataset["categories"] if not c.get("seen", True))}
    out = {}
    for name, cat_ids in subsets.items():
        if dt is None or not cat_ids:
            out["AP50_" + name] = 0.0
            out["AP_" + name] = 0.0
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = COCOeval(gt, dt, "bbox")
            evaluator.params.catIds = cat_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        out["AP_" + name] = max(0.0, float(evaluator.stats[0])) * 100
        out["AP50_" + name] = max(0.0, float(evaluator.stats[1])) * 100
    return out


def evaluate_model(cfg, model, eval_dir: str, gt_file: str, demo_threshold: Optional[float] = None) -> dict:
    """``glip.engine.run.run_test`` on ``DATASETS.TEST`` (writes ``bbox.json``), then :func:`ap50_by_split`, the
    best name per object and, with ``demo_threshold``, what a drawing at that threshold shows (``drawing``)."""
    from glip.engine.run import run_test

    run_test(cfg, model, output_dir=eval_dir)
    results_file = os.path.join(eval_dir, "inference", cfg.DATASETS.TEST[0], "bbox.json")
    metrics = ap50_by_split(gt_file, results_file)
    metrics["naming"] = naming_by_split(gt_file, results_file)
    if demo_threshold is not None:
        metrics["drawing"] = naming_by_split(gt_file, results_file, min_score=demo_threshold)
    return metrics


def naming_by_split(gt_file: str, results_file: str, min_score: float = float("-inf")) -> dict:
    """The best-scoring name on each held-out object (``glip.evaluation.naming``), counted separately for the
    seen and the unseen combinations: what the demo picture shows, where AP50 ranks each name across images. With
    ``min_score`` only the detections a drawing at that threshold shows count, and ``boxes_without_object`` is
    added (drawn boxes that cover no object)."""
    from glip.evaluation.naming import boxes_without_object, summarize_naming, top1_names

    with open(gt_file) as f:
        gt = json.load(f)
    with open(results_file) as f:
        detections = json.load(f)
    names = top1_names(gt, detections, min_score=min_score)
    groups = {split: [c["id"] for c in gt["categories"] if c.get("seen", True) == (split == "seen")]
              for split in ("seen", "unseen")}
    out = summarize_naming(gt, names, groups)
    if min_score > float("-inf"):
        out["boxes_without_object"] = boxes_without_object(gt, detections, min_score=min_score)
    return out


def format_naming(naming: dict) -> str:
    """One line per split: objects named right, and among the wrong names those with the colour (word 0) or the
    shape (word 1) right."""
    lines = []
    for split in ("seen", "unseen"):
        n = naming[split]
        lines.append("{} objects named right: {}/{} ({:.0f}%); wrong {} (colour right {}, shape right {}), "
                     "missed {}".format(split, n["right"], n["objects"], 100.0 * n["right"] / max(1, n["objects"]),
                                        n["wrong"], n["word_right"].get(0, 0), n["word_right"].get(1, 0),
                                        n["missed"]))
    return "\n".join(lines)


def format_drawing(drawing: dict, threshold: float) -> str:
    """What a drawing at the demo threshold shows over the whole held-out split (not only on demo.png)."""
    return ("drawn at the demo threshold {} over the held-out split: right name on {} of {} seen and {} of {} "
            "unseen objects, a wrong one on {} and {}, not drawn {} and {}; boxes without an object {}").format(
        threshold, drawing["seen"]["right"], drawing["seen"]["objects"], drawing["unseen"]["right"],
        drawing["unseen"]["objects"], drawing["seen"]["wrong"], drawing["unseen"]["wrong"],
        drawing["seen"]["missed"], drawing["unseen"]["missed"], drawing["boxes_without_object"])


def draw_demo(cfg, model, meta: dict, output_path: str, threshold: float) -> list:
    """Run ``GLIPDemo`` with every category name as the prompt on the held-out image with the most objects that
    mixes seen and unseen combinations, keep the best phrase per object (class-agnostic NMS at IoU 0.5: each box
    gets a score for every name sharing a word with its own), draw boxes and phrases and save the PNG. Returns
    ``([(phrase, score), ...] drawn, the image's path)``."""
    import numpy as np
    from PIL import Image

    from glip.engine.predictor import GLIPDemo
    from glip.structures.boxlist_ops import boxlist_nms
    from glip.utils.visualize import draw_detections

    with open(meta["test"]["detection"]) as f:
        test = json.load(f)
    unseen_ids = {c["id"] for c in test["categories"] if not c["seen"]}
    counts = {}
    for ann in test["annotations"]:
        seen, unseen = counts.get(ann["image_id"], (0, 0))
        counts[ann["image_id"]] = (seen + (ann["category_id"] not in unseen_ids),
                                   unseen + (ann["category_id"] in unseen_ids))
    image_id = max(sorted(counts), key=lambda i: (min(counts[i]) > 0, sum(counts[i]), counts[i][1]))
    record = next(im for im in test["images"] if im["id"] == image_id)
    image_path = os.path.join(meta["test"]["images"], record["file_name"])
    rgb = Image.open(image_path).convert("RGB")
    names = [c["name"] for c in test["categories"]]

    demo = GLIPDemo(cfg, confidence_threshold=threshold, load_model=False, model=model)
    predictions = demo.inference(np.asarray(rgb)[:, :, ::-1].copy(), names)
    predictions = boxlist_nms(predictions, 0.5, score_field="scores")
    labels = demo.label_names(predictions)
    scale = max(1, 512 // max(rgb.size))  # small generated images are drawn enlarged so the text stays legible
    drawn = draw_detections(rgb.resize((rgb.width * scale, rgb.height * scale)), predictions.bbox * scale,
                            predictions.get_field("labels"), predictions.get_field("scores"), labels)
    drawn.save(output_path)
    return list(zip(labels, [round(float(s), 3) for s in predictions.get_field("scores")])), image_path


def format_table(meta: dict, metrics: dict, minutes: dict) -> str:
    rows = [("held-out split", "categories", "AP", "AP50"),
            ("seen combinations", str(len(meta["seen"])), "{:.1f}".format(metrics["AP_seen"]),
             "{:.1f}".format(metrics["AP50_seen"])),
            ("unseen combinations", str(len(meta["unseen"])), "{:.1f}".format(metrics["AP_unseen"]),
             "{:.1f}".format(metrics["AP50_unseen"])),
            ("all", str(len(meta["seen"]) + len(meta["unseen"])), "{:.1f}".format(metrics["AP_all"]),
             "{:.1f}".format(metrics["AP50_all"]))]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("unseen: " + ", ".join(meta["unseen"]))
    lines.append("minutes: " + ", ".join("{} {:.1f}".format(k, v) for k, v in minutes.items()))
    return "\n".join(lines)


def next_steps(output_dir: str, image: str, caption: str, min_size: int) -> str:
    """What to run next on the trained model: the demo with any caption (at the model's test size ``min_size``,
    INPUT.MIN_SIZE_TEST) and the evaluation command."""
    train_dir = os.path.join(output_dir, "train")
    model = "--config-file {} --weight {}".format(os.path.join(train_dir, "config.yml"),
                                                   os.path.join(train_dir, "model_final.pth"))
    return "\n".join([
        "next: the demo on your trained model, with any caption (or --categories 'red triangle,blue circle'):",
        "  python tools/demo.py {} --image {} --min-image-size {} --threshold 0.3 --caption \"{}\" "
        "--output {}".format(model, image, min_size, caption, os.path.join(output_dir, "demo_custom")),
        "next: the COCO evaluation of the held-out split (AP over all 16 names):",
        "  python tools/test_grounding_net.py {} OUTPUT_DIR {}".format(model, os.path.join(output_dir, "test_net")),
    ])


def fit_budget(args, cfg, meta: dict, spent_minutes: float) -> str:
    """With ``--minutes``: time a few iterations and cut ``cfg.SOLVER.MAX_ITER`` to the budget (see
    :func:`plan_iterations`). Returns the note of what was cut (empty: nothing)."""
    if args.minutes <= 0:
        return ""
    seconds = measure_seconds_per_iteration(cfg)
    eval_minutes = EVAL_ITERATIONS_PER_IMAGE * meta["num_test"] * seconds / 60
    iterations, note = plan_iterations(cfg.SOLVER.MAX_ITER, seconds, args.minutes, spent_minutes, eval_minutes)
    cfg.SOLVER.MAX_ITER = iterations
    if note:
        logger.warning(note)
    else:
        logger.info("--minutes %g: the full schedule (%d iterations at %.2f s) fits", args.minutes, iterations,
                    seconds)
    return note


def run(argv=None) -> int:
    """The whole quickstart (see the module docstring); returns the exit code."""
    raw = sys.argv[1:] if argv is None else list(argv)
    if "--self-train" in raw:
        path = Path(__file__).with_name("self_train.py")
        spec = importlib.util.spec_from_file_location("glip_tool_self_train", path)
        self_train = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self_train)
        return self_train.run([a for a in raw if a != "--self-train"])
    args = parse_args(argv)
    start = time.time()
    output_dir = os.path.abspath(args.output_dir)
    data_root = os.path.join(output_dir, "data", DATA_SUBDIR)
    os.makedirs(output_dir, exist_ok=True)
    opts = [o for o in args.opts if o != "--"]
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    cfg = build_config(args.config_file, output_dir, data_root, opts)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)

    from glip.utils import cli

    cli.setup_run_logger(cfg.OUTPUT_DIR)
    minutes = {}
    meta = generate_data(args, data_root)
    minutes["data"] = (time.time() - start) / 60
    t = time.time()
    cut = fit_budget(args, cfg, meta, minutes["data"])
    if args.minutes > 0:
        minutes["timing"] = (time.time() - t) / 60
    cfg.freeze()
    cli.save_config(cfg, os.path.join(cfg.OUTPUT_DIR, "config.yml"))
    logger.info("Training %s for %d iterations; tensorboard log in %s", args.config_file, cfg.SOLVER.MAX_ITER,
                cfg.OUTPUT_DIR)
    t = time.time()
    model = train_model(cfg)
    minutes["train"] = (time.time() - t) / 60

    t = time.time()
    metrics = evaluate_model(cfg, model, os.path.join(output_dir, "eval"), meta["test"]["detection"],
                             demo_threshold=args.demo_threshold)
    minutes["eval"] = (time.time() - t) / 60
    t = time.time()
    drawn, image = draw_demo(cfg, model, meta, os.path.join(output_dir, "demo.png"), args.demo_threshold)
    minutes["demo"] = (time.time() - t) / 60
    total = (time.time() - start) / 60
    minutes["total"] = total
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({"metrics": metrics, "minutes": minutes, "iterations": cfg.SOLVER.MAX_ITER, "cut": cut,
                   "demo": drawn, "seen": meta["seen"], "unseen": meta["unseen"]}, f, indent=1)
    logger.info("Demo drawn to %s: %s", os.path.join(output_dir, "demo.png"), drawn)
    print(format_table(meta, metrics, minutes))
    print(format_naming(metrics["naming"]))
    print(format_drawing(metrics["drawing"], args.demo_threshold))
    if cut:
        print(cut)
    print(next_steps(output_dir, image, "a {} and a {}".format(*meta["unseen"][:2]), cfg.INPUT.MIN_SIZE_TEST))
    print("quickstart: AP50_seen={:.1f} AP50_unseen={:.1f} minutes={:.1f}".format(
        metrics["AP50_seen"], metrics["AP50_unseen"], total))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(run))
