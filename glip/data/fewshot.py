"""Few-shot subsets of a COCO-format detection json: exactly N boxes per class, chosen by a seed.

ODinW ships such subsets as ``fewshot_train_shot{N}_seed{S}.json`` next to the full annotations, registered as
``train_{N}_{S}`` in the task configs (``finetune.py --use_prepared_data`` picks them). This module writes the
same kind of file for any COCO json, e.g. a custom dataset::

    python -m glip.data.fewshot --ann-file mydata/train/annotations.json --shots 1,3,5,10 --seeds 3,30,300

Sampling (deterministic for a seed, independent of the global random state): the image ids are shuffled with
``random.Random(seed)``; a first pass keeps whole images whose boxes all fit in what each class still needs; a
second pass fills what is left with part of an image's boxes (a box not kept is not annotated in the subset, so
whole images are preferred). A class with fewer than N boxes in the source keeps all of them (logged). Crowd
boxes are never sampled. (``DATASETS.FEW_SHOT`` is the other, on-the-fly selection of the reference: N images
per class, greedily; see ``glip.data.datasets.coco_base.few_shot_ids``.)
"""
import argparse
import copy
import json
import logging
import os
import random
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

logger = logging.getLogger(__name__)


def few_shot_file_name(shots: int, seed: int, split: str = "train") -> str:
    """``fewshot_{split}_shot{shots}_seed{seed}.json`` (the ODinW naming)."""
    return "fewshot_{}_shot{}_seed{}.json".format(split, shots, seed)


def sample_few_shot(coco: dict, shots: int, seed: int) -> dict:
    """A copy of the COCO dict ``coco`` keeping exactly ``shots`` boxes of every category (see module doc).

    ``coco``: ``{"images", "annotations", "categories", ...}``; other top-level keys are copied. Images keep
    their records; annotations keep theirs (ids unchanged); the result lists them in the source order.
    """
    if shots <= 0:
        raise ValueError("shots must be positive, got {}".format(shots))
    per_image: Dict[object, List[dict]] = defaultdict(list)
    for ann in coco.get("annotations", []):
        if not ann.get("iscrowd", 0):
            per_image[ann["image_id"]].append(ann)
    image_ids = [img["id"] for img in coco.get("images", [])]
    random.Random(seed).shuffle(image_ids)
    need = {cat["id"]: shots for cat in coco.get("categories", [])}
    unknown = {a["category_id"] for anns in per_image.values() for a in anns} - set(need)
    if unknown:
        raise ValueError("annotations use category ids {} that are not in 'categories'".format(sorted(unknown)))

    chosen: Dict[object, List[dict]] = {}
    for img_id in image_ids:
        counts = Counter(a["category_id"] for a in per_image.get(img_id, []))
        if counts and all(need[c] >= k for c, k in counts.items()):
            chosen[img_id] = list(per_image[img_id])
            for c, k in counts.items():
                need[c] -= k
    for img_id in image_ids:
        if not any(need.values()):
            break
        if img_id in chosen:
            continue
        taken = []
        for ann in per_image.get(img_id, []):
            if need[ann["category_id"]] > 0:
                need[ann["category_id"]] -= 1
                taken.append(ann)
        if taken:
            chosen[img_id] = taken
    short = {c: shots - n for c, n in need.items() if n > 0}
    if short:
        logger.warning("categories with fewer than %d boxes keep all they have: %s", shots, short)

    kept_ann_ids = {id(a) for anns in chosen.values() for a in anns}
    out = {k: copy.deepcopy(v) for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [copy.deepcopy(img) for img in coco.get("images", []) if img["id"] in chosen]
    out["annotations"] = [copy.deepcopy(a) for a in coco.get("annotations", []) if id(a) in kept_ann_ids]
    return out


def boxes_per_category(coco: dict) -> Dict[int, int]:
    """``{category id: number of non-crowd boxes}`` (categories without boxes give 0)."""
    counts = {cat["id"]: 0 for cat in coco.get("categories", [])}
    for ann in coco.get("annotations", []):
        if not ann.get("iscrowd", 0):
            counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    return counts


def write_few_shot_files(ann_file: str, shots: Iterable[int], seeds: Iterable[int], split: str = "train",
                         out_dir: Optional[str] = None) -> List[str]:
    """Write one subset per (shots, seed) next to ``ann_file`` (or into ``out_dir``); returns the paths."""
    with open(ann_file) as f:
        coco = json.load(f)
    out_dir = out_dir or os.path.dirname(os.path.abspath(ann_file))
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for n in shots:
        for seed in seeds:
            path = os.path.join(out_dir, few_shot_file_name(n, seed, split))
            with open(path, "w") as f:
                json.dump(sample_few_shot(coco, n, seed), f)
            logger.info("wrote %s", path)
            paths.append(path)
    return paths


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Write few-shot subsets (N boxes per class) of a COCO json")
    parser.add_argument("--ann-file", required=True, help="COCO-format detection json")
    parser.add_argument("--shots", default="1,3,5,10", help="comma-separated N values")
    parser.add_argument("--seeds", default="3,30,300", help="comma-separated seeds")
    parser.add_argument("--split", default="train", help="name in the file name (train / val)")
    parser.add_argument("--out-dir", default=None, help="default: the folder of --ann-file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_few_shot_files(args.ann_file, _ints(args.shots), _ints(args.seeds), args.split, args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
