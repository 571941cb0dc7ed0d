"""Writers of tiny on-disk datasets (generated images + json/TSV) for the data tests."""
import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, w: int, h: int, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").save(path)


def write_coco(root: Path, images, annotations, categories, name="ann.json", img_dir="images", write_images=True):
    """images: list of dicts (id, file_name, width, height, + extra keys); annotations: list of dicts (bbox, ...)."""
    root.mkdir(parents=True, exist_ok=True)
    for k, ann in enumerate(annotations):
        ann.setdefault("id", k + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    if write_images:
        for i, img in enumerate(images):
            write_image(root / img_dir / img["file_name"], img["width"], img["height"], seed=i)
    ann_file = root / name
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(root / img_dir), str(ann_file)


def image_b64(w: int, h: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_caption_tsv(root: Path, rows, name="captions", sizes=None, hw=False, extra_yaml=None) -> str:
    """A caption dataset: ``name.img.tsv`` (``key \\t base64 PNG``), ``name.label.tsv`` (``key \\t json``), optional
    ``name.hw.tsv`` and ``name.yaml``. ``rows``: label dicts (or raw strings written as is); ``sizes``: per row
    the image (w, h) (default 64 x 48). Returns the yaml path."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = sizes or [(64, 48)] * len(rows)
    with open(root / f"{name}.img.tsv", "w") as img, open(root / f"{name}.label.tsv", "w") as label:
        for i, (row, (w, h)) in enumerate(zip(rows, sizes)):
            img.write(f"key{i}\t{image_b64(w, h, seed=i)}\n")
            label.write(f"key{i}\t{row if isinstance(row, str) else json.dumps(row)}\n")
    cfg = {"img": f"{name}.img.tsv", "label": f"{name}.label.tsv"}
    if hw:
        with open(root / f"{name}.hw.tsv", "w") as f:
            for i, (w, h) in enumerate(sizes):
                f.write(f"key{i}\t{json.dumps([{'height': h, 'width': w}])}\n")
        cfg["hw"] = f"{name}.hw.tsv"
    cfg.update(extra_yaml or {})
    (root / f"{name}.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    return str(root / f"{name}.yaml")
