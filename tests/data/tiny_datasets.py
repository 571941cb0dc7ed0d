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
