"""Quickstart: train and evaluate a small GLIP on a generated grounding dataset, on a CPU, in minutes.

    python tools/quickstart.py [--output-dir OUTPUT/quickstart] [KEY VALUE ...]

Steps: generate the coloured-shapes data (``glip.data.datasets.synthetic``) -> train the model of
``configs/quickstart/glip_tiny_shapes.yaml`` through the trainer of ``tools/train_net.py`` (``glip.engine.run.train``)
-> evaluate on the held-out split with the COCO evaluation (pycocotools), AP50 separately on colour-shape
combinations seen in training and on the never-seen ones -> draw the demo's boxes and phrases on a held-out image.
It ends with a table and the line ``quickstart: AP50_seen=<x> AP50_unseen=<y> minutes=<m>``.

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

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils.errors import run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.quickstart")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "quickstart" / "glip_tiny_shapes.yaml"
DATA_SUBDIR = "synthetic_shapes"


def _names(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv=None) -> argparse.Namespace:
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
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is much faster on a busy shared machine")
    parser.add_argument("--demo-threshold", type=float, default=0.35,
                        help="score threshold of the demo drawing (a correct name scores ~0.35-0.5 after training)")
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
    from glip.utils.cli import settle_device

    return settle_device(cfg)


def generate_data(args, data_root: str) -> dict:
    """The synthetic dataset under ``data_root`` (reused when ``meta.json`` says it was made the same way)."""
    from glip.data.datasets.synthetic import COLOURS, SHAPES, generate_synthetic_dataset, split_paths

    colours = list(args.colours or COLOURS)
    shapes = list(args.shapes or SHAPES)
    wanted = {"seed": args.seed, "num_train": args.num_train, "num_test": args.num_test,
              "image_size": [args.image_size, args.image_size], "colours": colours, "shapes": shapes}
    meta_path = os.path.join(data_root, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in wanted.items()):
            logger.info("Reusing the generated data in %s", data_root)
            meta.update({split: split_paths(os.path.join(data_root, split)) for split in ("train", "test")})
            return meta
    return generate_synthetic_dataset(data_root, num_train=args.num_train, num_test=args.num_test, seed=args.seed,
                                      image_size=(args.image_size, args.image_size), colours=colours, shapes=shapes)


def train_model(cfg):
    """Train with ``glip.engine.run.train`` (tensorboard on, random BERT: no pretrained text weights needed)."""
    from glip.engine.run import seed_everything, train

    seed_everything(cfg.SOLVER.SEED)
    return train(cfg, use_tensorboard=True, pretrained_language=False)


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


def evaluate_model(cfg, model, eval_dir: str, gt_file: str) -> dict:
    """``glip.engine.run.run_test`` on ``DATASETS.TEST`` (writes ``bbox.json``), then :func:`ap50_by_split`."""
    from glip.engine.run import run_test

    run_test(cfg, model, output_dir=eval_dir)
    results_file = os.path.join(eval_dir, "inference", cfg.DATASETS.TEST[0], "bbox.json")
    return ap50_by_split(gt_file, results_file)


def draw_demo(cfg, model, meta: dict, output_path: str, threshold: float) -> list:
    """Run ``GLIPDemo`` with every category name as the prompt on the held-out image with the most objects that
    mixes seen and unseen combinations, keep the best phrase per object (class-agnostic NMS at IoU 0.5: each box
    gets a score for every name sharing a word with its own), draw boxes and phrases and save the PNG. Returns
    ``[(phrase, score), ...]`` drawn."""
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
    rgb = Image.open(os.path.join(meta["test"]["images"], record["file_name"])).convert("RGB")
    names = [c["name"] for c in test["categories"]]

    demo = GLIPDemo(cfg, confidence_threshold=threshold, load_model=False, model=model)
    predictions = demo.inference(np.asarray(rgb)[:, :, ::-1].copy(), names)
    predictions = boxlist_nms(predictions, 0.5, score_field="scores")
    labels = demo.label_names(predictions)
    scale = max(1, 512 // max(rgb.size))  # small generated images are drawn enlarged so the text stays legible
    drawn = draw_detections(rgb.resize((rgb.width * scale, rgb.height * scale)), predictions.bbox * scale,
                            predictions.get_field("labels"), predictions.get_field("scores"), labels)
    drawn.save(output_path)
    return list(zip(labels, [round(float(s), 3) for s in predictions.get_field("scores")]))


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


def run(argv=None) -> int:
    """The whole quickstart (see the module docstring); returns the exit code."""
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
    cfg.freeze()
    cli.save_config(cfg, os.path.join(cfg.OUTPUT_DIR, "config.yml"))
    logger.info("Training %s for %d iterations; tensorboard log in %s", args.config_file, cfg.SOLVER.MAX_ITER,
                cfg.OUTPUT_DIR)
    t = time.time()
    model = train_model(cfg)
    minutes["train"] = (time.time() - t) / 60

    t = time.time()
    metrics = evaluate_model(cfg, model, os.path.join(output_dir, "eval"), meta["test"]["detection"])
    minutes["eval"] = (time.time() - t) / 60
    t = time.time()
    drawn = draw_demo(cfg, model, meta, os.path.join(output_dir, "demo.png"), args.demo_threshold)
    minutes["demo"] = (time.time() - t) / 60
    total = (time.time() - start) / 60
    minutes["total"] = total
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({"metrics": metrics, "minutes": minutes, "demo": drawn, "seen": meta["seen"],
                   "unseen": meta["unseen"]}, f, indent=1)
    logger.info("Demo drawn to %s: %s", os.path.join(output_dir, "demo.png"), drawn)
    print(format_table(meta, metrics, minutes))
    print("quickstart: AP50_seen={:.1f} AP50_unseen={:.1f} minutes={:.1f}".format(
        metrics["AP50_seen"], metrics["AP50_unseen"], total))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(run))
