"""Run GLIP on image files and draw what it finds.

Usage:
    python tools/demo.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml \
        --weight MODEL/glip_tiny_model_o365_goldg.pth --image photos/ street.jpg \
        --caption "a cat sitting on a wooden table" | --categories "person,bicycle,traffic light" \
        [--threshold 0.5] [--output demo_output] [--min-image-size 800] [KEY VALUE ...]

`--image` takes files and folders (the images directly inside a folder, sorted). For every image the output
folder gets `<name>.png` with the boxes, phrases and scores drawn, and `detections.json` lists all detections
(boxes in original-image pixels, xyxy). A free `--caption` is split into phrases offline (see
`glip/engine/phrases.py`); `--categories` (comma separated) may be longer than the language model's 256 tokens:
the prompt is then split into chunks automatically.

Before the model is built, the config, the images (files that do not decode as images are reported by name and
skipped), the caption (empty, or longer than MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN tokens) and the weight file
(exists, reads safely, fits the config's model) are checked. Exit code 0 when every image was processed, 1 when
some image failed, 2 for a bad input (one line naming it; `--debug` shows the traceback). `MODEL.DEVICE cuda`
on a machine without CUDA runs on the CPU.
"""
import argparse
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils.errors import DataError, UserError, run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.demo")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="GLIP demo: detect the phrases of a caption or a list of "
                                                 "categories in images and draw the boxes")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config (yaml)")
    parser.add_argument("--weight", default=None, metavar="FILE", help="checkpoint (default: MODEL.WEIGHT)")
    parser.add_argument("--image", required=True, nargs="+", metavar="PATH", help="image files and/or folders")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--caption", help="a free caption, or 'a. b. c.' class names")
    prompt.add_argument("--categories", help="comma-separated class names, e.g. 'person,bicycle,traffic light'")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold of the drawn/saved boxes")
    parser.add_argument("--output", default="demo_output", metavar="DIR", help="where the PNGs and json go")
    parser.add_argument("--min-image-size", type=int, default=800,
                        help="resize the short side to this before inference (0: keep the size)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--phrases", default="auto", choices=("auto", "separator", "spacy", "rules"),
                        help="phrase extraction for a free caption")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MODEL.DEVICE; cuda without a GPU: cpu)")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="config overrides as KEY VALUE pairs")
    return parser


def collect_images(paths: Sequence[str]) -> List[Path]:
    """Files as given and the image files directly inside folders (sorted); a missing path raises."""
    files: List[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                logger.warning("no image files in folder %s", path)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such image file or folder: {path}; check the --image paths")
    if not files:
        raise DataError("no image files in {}; give image files or folders holding images (suffixes {})".format(
            ", ".join(map(str, paths)), ", ".join(IMAGE_SUFFIXES)))
    return files


def parse_categories(text: str) -> List[str]:
    names = [name.strip() for name in text.split(",")]
    names = [name for name in names if name]
    if not names:
        raise DataError(f"--categories gave no class names: {text!r}; give names separated by commas")
    return names


def load_config(args):
    """The merged config (mutable): config file, opts, ``--weight``, ``--device``; the device settled."""
    from glip.utils import cli

    cfg = cli.merge_config(cli.base_config(), args.config_file, list(args.opts or []))
    if args.weight:
        cfg.MODEL.WEIGHT = args.weight
    if args.device:
        cfg.MODEL.DEVICE = args.device
    return cli.settle_device(cfg)


def readable_images(files: Sequence[Path], errors: List[dict]) -> List[Path]:
    """The files whose header decodes as an image; the others are logged, added to ``errors`` and left out. Raises
    DataError when none is left."""
    from PIL import Image

    readable = []
    for path in files:
        try:
            Image.open(path).close()
            readable.append(path)
        except Exception as err:  # PIL: UnidentifiedImageError, OSError, SyntaxError, ...
            message = f"cannot read {path} as an image ({type(err).__name__}); skipped"
            logger.error("%s", message)
            errors.append({"file": str(path), "error": message})
    if not readable:
        raise DataError(f"{files[0]} is not an image file (nor are the other {len(files) - 1} inputs)"
                        if len(files) > 1 else f"{files[0]} is not an image file; give a JPEG, PNG, ... file")
    return readable


def check_inputs(cfg, caption, config_file: str):
    """The caption fits the language model and the weight file fits the config's model (before building it)."""
    from glip.data.positive_map import load_tokenizer
    from glip.engine.preflight import check_caption, check_weight

    tokenizer = load_tokenizer(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    check_caption(caption, tokenizer, cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN)
    weight = check_weight(cfg, config_name=config_file)
    if weight:
        cfg.MODEL.WEIGHT = weight


def detections_to_json(prediction, names: Sequence[str]) -> List[Dict]:
    """Per detection: xyxy box (original pixels), score, 1-based label and its phrase."""
    boxes = prediction.bbox.tolist()
    scores = prediction.get_field("scores").tolist()
    labels = prediction.get_field("labels").tolist()
    return [{"box": [round(v, 2) for v in box], "score": round(score, 5), "label": label, "phrase": name}
            for box, score, label, name in zip(boxes, scores, labels, names)]


def _output_path(out_dir: Path, image: Path, used: set) -> Path:
    stem, index = image.stem, 0
    candidate = out_dir / f"{stem}.png"
    while candidate.name in used:
        index += 1
        candidate = out_dir / f"{stem}_{index}.png"
    used.add(candidate.name)
    return candidate


def run(args, demo=None) -> int:
    """Run the demo for parsed `args`; `demo` (a GLIPDemo) skips building the model. Returns the exit code; a bad
    input raises a `glip.utils.errors.UserError`."""
    from tqdm import tqdm

    from glip.engine.predictor import GLIPDemo, ImageLoadError, load_image
    from glip.utils.visualize import draw_detections

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    caption = parse_categories(args.categories) if args.categories is not None else args.caption
    if isinstance(caption, str) and not caption.strip():
        raise DataError("--caption is empty; give a caption, or class names with --categories")
    errors = []
    files = readable_images(collect_images(args.image), errors)
    if demo is None:
        cfg = load_config(args)
        check_inputs(cfg, caption, args.config_file)
        cfg.freeze()
        demo = GLIPDemo(cfg, confidence_threshold=args.threshold,
                        min_image_size=args.min_image_size or None, phrase_method=args.phrases)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, used = [], set()
    progress = tqdm(total=len(files), desc="GLIP", unit="image")
    for start in range(0, len(files), args.batch_size):
        batch_files, batch_images = [], []
        for path in files[start: start + args.batch_size]:
            try:
                batch_images.append(load_image(path))
                batch_files.append(path)
            except ImageLoadError as err:
                logger.error("%s", err)
                errors.append({"file": str(path), "error": str(err)})
                progress.update(1)
        if not batch_images:
            continue
        try:
            predictions = demo.predict(batch_images, caption, threshold=args.threshold, batch_size=args.batch_size)
        except ValueError as err:  # a caption problem: the same for every image
            progress.close()
            raise DataError(f"{err}; change the caption") from err
        for path, image, prediction in zip(batch_files, batch_images, predictions):
            names = demo.label_names(prediction)
            drawn = draw_detections(image[:, :, ::-1], prediction.bbox, prediction.get_field("labels"),
                                    prediction.get_field("scores"), names)
            target = _output_path(out_dir, path, used)
            drawn.save(target)
            records.append({"file": str(path), "output": str(target), "width": image.shape[1],
                            "height": image.shape[0], "detections": detections_to_json(prediction, names)})
            progress.update(1)
    progress.close()
    summary = {"caption": caption, "entities": list(demo.entities), "threshold": args.threshold,
               "images": records, "errors": errors}
    with open(out_dir / "detections.json", "w") as handle:
        json.dump(summary, handle, indent=1)
    logger.info("%d images done, %d failed; results in %s", len(records), len(errors), out_dir)
    return 1 if errors else 0


def main(argv: Optional[Sequence[str]] = None, demo=None) -> int:
    """The command line: parse `argv`, run, return the exit code (bad inputs: one line on stderr and 2)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return run_tool(lambda arguments: run(build_parser().parse_args(arguments), demo=demo), argv)


if __name__ == "__main__":
    sys.exit(main())
