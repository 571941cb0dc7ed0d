"""Drawing detections on an image with PIL (no OpenCV): boxes plus "phrase: score" labels, one colour per label."""
from typing import Optional, Sequence

import numpy as np

PALETTE = (2 ** 25 - 1, 2 ** 15 - 1, 2 ** 21 - 1)


def label_color(label: int) -> tuple:
    """A fixed RGB colour per 1-based label (the reference's palette rule, kept away from near-black)."""
    rgb = tuple(int(((30 * (label - 1) + 1) * p) % 255) for p in PALETTE)
    return rgb if sum(rgb) > 120 else tuple(255 - c for c in rgb)


def _load_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_detections(image_rgb, boxes, labels, scores, names: Optional[Sequence[str]] = None,
                    line_width: Optional[int] = None, font_size: Optional[int] = None):
    """Draw boxes and "name: score" on a copy of `image_rgb` and return it as a PIL RGB image.

    `image_rgb`: (H, W, 3) uint8 RGB array or PIL image; `boxes` (N, 4) xyxy in its pixels; `labels` (N,) 1-based;
    `scores` (N,); `names` the text per detection (default: the label number). Line width and font size scale with
    the image size unless given.
    """
    from PIL import Image, ImageDraw

    image = image_rgb.convert("RGB").copy() if isinstance(image_rgb, Image.Image) \
        else Image.fromarray(np.ascontiguousarray(np.asarray(image_rgb, dtype=np.uint8)), "RGB")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    scores = [float(v) for v in np.asarray(scores).reshape(-1)]
    names = [str(n) for n in names] if names is not None else [str(v) for v in labels]
    if not len(boxes) == len(labels) == len(scores) == len(names):
        raise ValueError(f"got {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores, {len(names)} names")
    side = min(image.size)
    line_width = line_width or max(1, round(side / 250))
    font = _load_font(font_size or max(10, round(side / 40)))
    draw = ImageDraw.Draw(image)
    placed = []
    for box, label, score, name in zip(boxes, labels, scores, names):
        color = label_color(label)
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=line_width)
        text = f"{name}: {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top + 2
        tx = max(0.0, min(x0, image.size[0] - tw - 2))
        ty = y0 - th - line_width if y0 - th - line_width >= 0 else y0 + line_width
        while any(abs(tx - px) < tw and abs(ty - py) < th for px, py in placed):
            ty += th
        placed.append((tx, ty))
        draw.rectangle([tx, ty, tx + tw + 2, ty + th], fill=color)
        draw.text((tx + 1 - left, ty + 1 - top), text, fill=(0, 0, 0), font=font)
    return image
