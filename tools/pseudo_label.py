"""Pseudo-label image-caption pairs with a teacher GLIP into caption TSV data (``CaptionTSV`` reads it as is).

    python tools/pseudo_label.py --config-file C --weight W --input PATH --output-dir OUT \\
        [--threshold 0.5] [--batch-size N] [--previews K] [KEY VALUE ...]
    torchrun --nproc_per_node N tools/pseudo_label.py ...      (each process labels its own shard)

``--input``: a folder of images with same-named ``.txt`` captions, a COCO-captions json (``--image-root``), a
caption dataset yaml (inference-caption rows) or a ``key \\t caption \\t base64`` TSV
(``glip.engine.caption_pairs``). The teacher is any config + weights; its test transform, NMS
(``MODEL.ATSS.NMS_TH``, per phrase) and ``MODEL.DEVICE`` apply.

``OUT`` receives ``shards/part<r>of<N>.{img,label,hw}.tsv`` + ``.yaml`` per process (plus the resume records
``*.keys.txt``, ``*.progress.json``), ``dataset.yaml`` over all of them (one shard: its files; several: their
concatenation ``img.tsv`` / ``label.tsv`` / ``hw.tsv``), ``summary.json`` and, with ``--previews K``,
``previews/*.png``. Running the same command again resumes: pairs already committed are skipped, none is
written twice. Register the output with ``DATASETS.REGISTER: {name: {factory: CaptionTSV, yaml_file:
OUT/dataset.yaml}}`` and ``DATASETS.CAPTION_FORMAT_VERSION`` equal to ``--format-version`` (see DATA.md).

A bad input (config, weights, input path, options) stops the run before any model is built with one line on
stderr and exit code 2 (``glip.utils.errors.run_tool``; ``--debug`` or ``GLIP_DEBUG=1``: the traceback too).
"""
import argparse
import importlib.util
import json
import logging
import os
import sys
import time

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils.errors import DataError, UserError, run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.pseudo_label")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, help="the teacher's config yaml")
    parser.add_argument("--weight", required=True, help="the teacher's weights (a GLIP checkpoint)")
    parser.add_argument("--input", required=True, help="image folder with .txt captions, COCO-captions json, "
                                                       "caption dataset yaml or key/caption/base64 TSV")
    parser.add_argument("--output-dir", required=True, help="where the caption TSV shards and dataset.yaml go")
    parser.add_argument("--threshold", type=float, default=0.5, help="keep boxes scoring above this")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--image-root", default=None, help="image folder of a COCO-captions json")
    parser.add_argument("--all-captions", action="store_true",
                        help="COCO captions: one row per caption (default: the first caption of each image)")
    parser.add_argument("--phrase-method", default="auto", choices=("auto", "spacy", "rules", "separator"),
                        help="noun phrases: spaCy when installed (auto), else rules (glip.engine.phrases)")
    parser.add_argument("--format-version", default="v1", choices=("v1", "v2"),
                        help="label json layout: per box (v1) or per entity (v2)")
    parser.add_argument("--keep-empty", action="store_true", help="also write rows with no box above threshold")
    parser.add_argument("--previews", type=int, default=0, help="draw the first K labelled images (rank 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1, got {}".format(args.batch_size))
    if not 0.0 <= args.threshold < 1.0:
        raise UserError("--threshold must be in [0, 1) (a box is kept when its score is above it), got {}".format(
            args.threshold))
    if args.previews < 0:
        raise UserError("--previews must be >= 0, got {}".format(args.previews))
    args.opts = [o for o in args.opts if o != "--"]
    return args


def load_config(args):
    """The teacher's config (``--config-file`` then ``KEY VALUE ...``) with ``MODEL.WEIGHT = --weight``, after
    checking that the weights exist and fit its model (``glip.engine.preflight.check_weight``)."""
    from glip.engine.preflight import check_weight
    from glip.utils import cli

    cfg = cli.merge_config(cli.base_config(), args.config_file, args.opts)
    cfg.MODEL.WEIGHT = check_weight(cfg, args.weight, config_name=args.config_file)
    cfg.freeze()
    return cfg


def read_input(args):
    """The image-caption pairs of ``--input``; a missing, unreadable or empty input is a ``DataError``."""
    from glip.engine.caption_pairs import read_pairs

    if not os.path.exists(args.input):
        raise DataError("--input not found: {}; give an image folder with .txt captions, a COCO-captions .json, "
                        "a caption dataset .yaml or a key/caption/base64 .tsv".format(args.input))
    try:
        pairs = read_pairs(args.input, args.image_root, args.all_captions)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError("--input {}: {}".format(args.input, exc)) from exc
    if not pairs:
        raise DataError("--input {} holds no image-caption pairs (a folder needs images with same-named .txt "
                        "captions)".format(args.input))
    return pairs


def build_labeler(args, cfg):
    """The teacher (``GLIPDemo`` of ``cfg``, weights ``MODEL.WEIGHT``) and its :class:`PseudoLabeler`."""
    from glip.data.transforms import build_transforms
    from glip.engine.predictor import GLIPDemo
    from glip.engine.pseudo_labeling import PseudoLabeler

    demo = GLIPDemo(cfg, confidence_threshold=args.threshold, load_model=True, phrase_method=args.phrase_method)
    return PseudoLabeler(demo, build_transforms(cfg, is_train=False), threshold=args.threshold,
                         phrase_method=args.phrase_method, format_version=args.format_version,
                         keep_empty=args.keep_empty)


def finish(out_dir: str, shards_dir: str, version: str, seconds: float) -> dict:
    """Rank 0, after every shard is closed: ``dataset.yaml`` over the shards and ``summary.json``."""
    from glip.data.caption_writer import merge_shards, shard_names
    from glip.engine.pseudo_labeling import summarize, total_counts

    names = shard_names(shards_dir)
    yaml_path = merge_shards(shards_dir, names, out_dir, version)
    summary = dict(summarize(total_counts(shards_dir), seconds), shards=names, dataset_yaml=yaml_path,
                   format_version=version)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def run(argv=None) -> int:
    """Label the input (see the module docstring); returns the exit code. A bad input raises a ``UserError``
    before any model is built."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    start = time.time()
    pairs = read_input(args)
    cfg = load_config(args)
    from glip.engine.pseudo_labeling import label_shard
    from glip.utils import cli, comm

    world = int(os.environ.get("WORLD_SIZE", 1))
    cli.init_distributed(argparse.Namespace(distributed=world > 1, local_rank=comm.get_local_rank()),
                         device=cfg.MODEL.DEVICE)
    rank = comm.get_rank()
    logger.info("rank %d of %d: %d pairs in %s", rank, world, len(pairs), args.input)
    labeler = build_labeler(args, cfg)
    shards_dir = os.path.join(args.output_dir, "shards")
    label_shard(labeler, pairs, shards_dir, rank, world, args.batch_size,
                previews=args.previews if rank == 0 else 0, preview_dir=os.path.join(args.output_dir, "previews"),
                progress=not args.no_progress)
    comm.synchronize()
    if rank == 0:
        summary = finish(args.output_dir, shards_dir, args.format_version, time.time() - start)
        print("pseudo_label: images={images} rows={rows_written} phrases={phrases} boxes={boxes_kept} "
              "mean_boxes_per_image={mean_boxes_per_image:.2f} skipped={skipped} -> {dataset_yaml}".format(**summary))
    cli.shutdown_distributed()
    return 0


def main(argv=None) -> int:
    """The command line: a bad input prints one line on stderr and returns 2 (``run_tool``)."""
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
