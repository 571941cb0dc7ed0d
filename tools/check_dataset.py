"""Validate a dataset folder before training/evaluation and report what is missing or malformed.

Examples (paths relative to $DATASET or ./DATASET resolve as the dataset catalog does):
    python tools/check_dataset.py --name coco_2017_val
    python tools/check_dataset.py --name flickr30k_val
    python tools/check_dataset.py --config-file configs/odinw_13/pothole.yaml    # every DATASETS.REGISTER entry
    python tools/check_dataset.py --format coco --ann-file DATASET/odinw/pothole/train/annotations.json \
        --img-dir DATASET/odinw/pothole/train
    python tools/check_dataset.py --format tsv --yaml DATASET/Objects365/train.cas2000.yaml
`--quick` makes only the cheap checks the tools make before every run (glip.data.check.quick_check).
Exit status 0 when every checked dataset is usable, 1 when a check found problems (the report lists them), 2 for
a bad command line or config file (one line; `--debug` shows the traceback).
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glip.data.check import Report, check_coco, check_tsv, dataset_inputs, quick_check  # noqa: E402
from glip.utils.errors import run_tool  # noqa: E402

logger = logging.getLogger("check_dataset")


def check_catalog_name(name: str, check_images: bool = True, quick: bool = False) -> Report:
    """Resolve ``name`` through the dataset catalog and check what its factory would read (``quick``: only the
    cheap checks made before a run)."""
    from glip.config.paths_catalog import DatasetCatalog
    from glip.data.datasets import resolve_dataset

    try:
        factory, args = resolve_dataset(name, DatasetCatalog)
    except (KeyError, ValueError, NotImplementedError, FileNotFoundError) as exc:
        report = Report()
        report.errors.append("{}: {}".format(name, str(exc).strip("'\"")))
        return report
    inputs = dataset_inputs(factory.name, args)
    if quick:
        return quick_check(inputs)
    if inputs["yaml_file"]:
        return check_tsv(inputs["yaml_file"])
    return check_coco(inputs["ann_file"], inputs["img_dir"], grounding=inputs["grounding"],
                      check_images=check_images, vg_img_dir=inputs["vg_img_dir"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", action="append", default=[], help="dataset catalog name (repeatable)")
    parser.add_argument("--config-file", help="check every DATASETS.REGISTER entry (and TRAIN/TEST names) of it")
    parser.add_argument("--format", choices=("coco", "mdetr", "tsv"), help="check explicit paths")
    parser.add_argument("--ann-file")
    parser.add_argument("--img-dir")
    parser.add_argument("--yaml", help="TSV dataset yaml")
    parser.add_argument("--skip-images", action="store_true", help="do not look for the image files")
    parser.add_argument("--quick", action="store_true", help="only the cheap checks the tools make before a run")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    checks = []
    if args.format == "tsv":
        checks.append((args.yaml, lambda: check_tsv(args.yaml)))
    elif args.format in ("coco", "mdetr"):
        checks.append((args.ann_file, lambda: check_coco(args.ann_file, args.img_dir, args.format == "mdetr",
                                                         not args.skip_images)))
    names = list(args.name)
    if args.config_file:
        from glip.config import cfg as default_cfg
        from glip.config.paths_catalog import register_datasets

        cfg = default_cfg.clone()
        cfg.merge_from_file(args.config_file)
        names += register_datasets(cfg, is_train=True) or list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    for name in names:
        checks.append((name, lambda name=name: check_catalog_name(name, not args.skip_images, args.quick)))
    if not checks:
        parser.error("give --name, --config-file or --format with paths")

    all_ok = True
    for label, run in checks:
        report = run()
        logger.info("== %s\n%s", label, report.format())
        all_ok &= report.ok
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))
