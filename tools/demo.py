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
the prompt is then split into chunks automatically. Unreadable files are reported by name and skipped; the exit
code is 1 when any image failed, 2 for a bad command line or a weight file that does not fit the config.
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
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
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
            raise FileNotFoundError(f"no such image file or folder: {path}")
    return files


def parse_categories(text: str) -> List[str]:
    names = [name.strip() for name in text.split(",")]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"--categories gave no class names: {text!r}")
    return names


def load_config(args):
    from glip.config import cfg as default_cfg

    cfg = default_cfg.clone()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    if args.weight:
        cfg.MODEL.WEIGHT = args.weight
    if args.device:
        cfg.MODEL.DEVICE = args.device
    elif cfg.MODEL.DEVICE.startswith("cuda"):
        import torch

        cfg.MODEL.DEVICE = cfg.MODEL.DEVICE if torch.cuda.is_available() else "cpu"
    cfg.freeze()
    return cfg


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
    """Run the demo for parsed `args`; `demo` (a GLIPDemo) skips building the model. Returns the exit code."""
    from tqdm import tqdm

    from glip.engine.predictor import GLIPDemo, ImageLoadError, load_image
    from glip.utils.visualize import draw_detections

    try:
        files = collect_images(args.image)
        caption = parse_categories(args.categories) if args.categories is not None else args.caption
        if isinstance(caption, str) and not caption.strip():
            raise ValueError("--caption is empty")
        if args.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    if demo is None:
        from glip.engine.weights import WeightLoadError

        cfg = load_config(args)
        try:
            demo = GLIPDemo(cfg, confidence_threshold=args.threshold,
                            min_image_size=args.min_image_size or None, phrase_method=args.phrases)
        except (WeightLoadError, FileNotFoundError) as err:
            logger.error("%s", err)
            return 2
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, errors, used = [], [], set()
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
            logger.error("%s", err)
            progress.close()
            return 2
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return run(build_parser().parse_args(argv), demo=demo)


if __name__ == "__main__":
    sys.exit(main())
