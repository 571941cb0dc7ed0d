"""A generated grounding dataset of coloured shapes (the quickstart's data; no download, deterministic by seed).

Each image holds a few non-overlapping shapes (circle, square, triangle, star) in one of a few colours and two
sizes, on a plain or textured background. Every split is written twice, in the two formats the data pipeline reads:

* ``<split>/detection.json``: COCO detection json whose categories are colour-shape combinations ("red circle");
  detection-as-grounding turns them into prompts such as ``"red circle. blue square. ..."``;
* ``<split>/grounding.json``: MDETR-style json with one caption per image, e.g. ``"a small red circle to the left
  of a large blue square and a green star"``, each box carrying the ``tokens_positive`` character span of its
  phrase (``"small red circle"``).

A third, captions-only split (:func:`generate_captions_split`, ``captions``) is the raw material of self-training:
images with a ``.txt`` caption next to each (the input form of ``tools/pseudo_label.py``), seen and unseen
combinations alike, and their boxes withheld in ``withheld/`` (for scoring pseudo-labels only).

The held-out split (``test``) contains colour-shape combinations that never occur in the training split, neither
as boxes nor in any training caption or prompt (``unseen``): the model has seen "red" and "triangle" but never a
"red triangle", so the test measures compositional zero-shot grounding rather than memorisation. The training
detection json lists only the seen combinations; the test json lists all, each with ``"seen": true/false``.
"""
import json
import logging
import math
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 30),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "star")
# Colours that training objects may be drawn in without their colour being named ("a small circle"), far from the
# named COLOURS: a shape word then covers many colours, so the detector cannot tie a shape to the few colours it
# is named with (see ``unnamed_colours`` of :func:`generate_synthetic_dataset`).
UNNAMED_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "black": (30, 30, 30),
    "pink": (235, 90, 200),
    "cyan": (30, 200, 210),
    "purple": (135, 55, 190),
    "orange": (245, 135, 20),
    "brown": (125, 80, 35),
}
# Shapes that training objects may have without their shape being named ("a red shape"): a colour word then covers
# many shapes (``unnamed_shapes`` of :func:`generate_synthetic_dataset`).
UNNAMED_SHAPES: Tuple[str, ...] = ("hexagon", "diamond", "cross")
SMALL_FRACTION = 0.2  # objects whose longer side is below this fraction of the image side are "small" in captions


def combination_name(colour: str, shape: str) -> str:
    """The object's name: "red circle"; the shape alone for an unnamed colour, "red shape" for an unnamed shape."""
    if colour in UNNAMED_COLOURS:
        return shape
    return "{} {}".format(colour, "shape" if shape in UNNAMED_SHAPES else shape)


def default_unseen(colours: Sequence[str], shapes: Sequence[str]) -> List[Tuple[str, str]]:
    """One held-out shape per colour on a shifted diagonal, so every colour and every shape stays seen with others.

    For the default 4 x 4 vocabulary: red triangle, green star, blue circle, yellow square.
    """
    if len(colours) < 2 or len(shapes) < 3:
        raise ValueError("need at least 2 colours and 3 shapes to hold combinations out")
    return [(colour, shapes[(i + 2) % len(shapes)]) for i, colour in enumerate(colours)]


def shape_polygon(shape: str, box: Sequence[float]) -> Optional[List[Tuple[float, float]]]:
    """Vertices of ``shape`` inscribed in ``box`` (x0, y0, x1, y1); None for a circle (drawn as an ellipse)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    if shape == "circle":
        return None
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "star":
        outer_x, outer_y = (x1 - x0) / 2.0, (y1 - y0) / 2.0
        points = []
        for k in range(10):
            angle = -math.pi / 2 + k * math.pi / 5
            scale = 1.0 if k % 2 == 0 else 0.45
            points.append((cx + scale * outer_x * math.cos(angle), cy + scale * outer_y * math.sin(angle)))
        return points
    if shape == "hexagon":
        return [(cx + (x1 - x0) / 2.0 * math.cos(k * math.pi / 3), cy + (y1 - y0) / 2.0 * math.sin(k * math.pi / 3))
                for k in range(6)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "cross":
        ax, ay = (x1 - x0) / 6.0, (y1 - y0) / 6.0
        return [(cx - ax, y0), (cx + ax, y0), (cx + ax, cy - ay), (x1, cy - ay), (x1, cy + ay), (cx + ax, cy + ay),
                (cx + ax, y1), (cx - ax, y1), (cx - ax, cy + ay), (x0, cy + ay), (x0, cy - ay), (cx - ax, cy - ay)]
    raise ValueError("unknown shape {!r}".format(shape))


def tight_box(shape: str, box: Sequence[float]) -> List[float]:
    """The drawn shape's bounding box (x0, y0, x1, y1): a star's points do not reach the bottom of its square."""
    polygon = shape_polygon(shape, box)
    if polygon is None:
        return list(box)
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return [min(xs), min(ys), max(xs), max(ys)]


def _jitter(colour: Tuple[int, int, int], rng: random.Random, amount: int = 20) -> Tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def draw_background(width: int, height: int, rng: random.Random, textured_prob: float = 0.5) -> Image.Image:
    """A light, low-saturation background: plain, or (with ``textured_prob``) stripes, checks or speckle."""
    base = rng.randint(150, 235)
    tint = tuple(max(0, min(255, base + rng.randint(-15, 15))) for _ in range(3))
    image = Image.new("RGB", (width, height), tint)
    if rng.random() >= textured_prob:
        return image
    draw = ImageDraw.Draw(image)
    shade = tuple(max(0, c - rng.randint(25, 55)) for c in tint)
    kind = rng.choice(("stripes", "checks", "speckle"))
    if kind == "stripes":
        step = rng.randint(8, 20)
        for x in range(-height, width, step):
            draw.line([(x, 0), (x + height, height)], fill=shade, width=max(1, step // 3))
    elif kind == "checks":
        step = rng.randint(12, 28)
        for y in range(0, height, step):
            for x in range(0, width, step):
                if (x // step + y // step) % 2 == 0:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=shade)
    else:
        for _ in range(width * height // 40):
            x, y = rng.randrange(width), rng.randrange(height)
            draw.point((x, y), fill=shade)
    return image


def _overlaps(box: Sequence[float], others: Sequence[Sequence[float]], margin: float) -> bool:
    for o in others:
        if box[0] < o[2] + margin and o[0] < box[2] + margin and box[1] < o[3] + margin and o[1] < box[3] + margin:
            return True
    return False


def place_objects(combos: Sequence[Tuple[str, str]], width: int, height: int, rng: random.Random,
                  min_side: int, max_side: int, margin: float = 4.0, tries: int = 100) -> List[dict]:
    """Non-overlapping placements ``{"colour", "shape", "box" (tight x0, y0, x1, y1)}``; objects that find no
    free spot after ``tries`` attempts are left out."""
    objects, boxes = [], []
    for colour, shape in combos:
        for _ in range(tries):
            side = rng.randint(min_side, max_side)
            w = side if shape in ("circle", "square", "star") else int(round(side * rng.uniform(0.9, 1.2)))
            h = side
            if w >= width - 2 or h >= height - 2:
                continue
            x0, y0 = rng.uniform(1, width - w - 1), rng.uniform(1, height - h - 1)
            box = tight_box(shape, [x0, y0, x0 + w, y0 + h])
            if not _overlaps(box, boxes, margin):
                objects.append({"colour": colour, "shape": shape, "square": [x0, y0, x0 + w, y0 + h], "box": box})
                boxes.append(box)
                break
    return objects


def draw_objects(image: Image.Image, objects: Sequence[dict], rng: random.Random):
    draw = ImageDraw.Draw(image)
    for obj in objects:
        fill = _jitter(COLOURS.get(obj["colour"]) or UNNAMED_COLOURS[obj["colour"]], rng)
        polygon = shape_polygon(obj["shape"], obj["square"])
        if polygon is None:
            draw.ellipse(obj["square"], fill=fill)
        else:
            draw.polygon(polygon, fill=fill)


def _relation(a: Sequence[float], b: Sequence[float]) -> str:
    """Where box ``a`` is relative to box ``b``, in caption words (image y grows downwards)."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2.0
    dy = (a[1] + a[3] - b[1] - b[3]) / 2.0
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def size_word(box: Sequence[float], image_side: float) -> str:
    return "small" if max(box[2] - box[0], box[3] - box[1]) < SMALL_FRACTION * image_side else "large"


def make_caption(objects: Sequence[dict], rng: random.Random, image_side: float,
                 size_prob: float = 0.7) -> Tuple[str, List[list]]:
    """A caption naming every object, and per object the ``[begin, end]`` character span of its phrase.

    Form: ``"a <phrase> <relation> a <phrase>[ and a <phrase>]*"`` where a phrase is ``[size ]colour shape``
    (``[size ]shape`` for an unnamed colour).
    """
    caption, spans = "", []
    for i, obj in enumerate(objects):
        if i == 1:
            caption += " " + _relation(objects[0]["box"], obj["box"]) + " "
        elif i > 1:
            caption += " and "
        caption += "a "
        size = [size_word(obj["box"], image_side)] if rng.random() < size_prob else []
        phrase = " ".join(size + [combination_name(obj["colour"], obj["shape"])])
        spans.append([[len(caption), len(caption) + len(phrase)]])
        caption += phrase
    return caption, spans


def _xywh(box: Sequence[float]) -> List[float]:
    return [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2), round(box[3] - box[1], 2)]


def generate_split(folder: str, num_images: int, combos: Sequence[Tuple[str, str]],
                   categories: Sequence[Tuple[str, str]], seed: int, image_size: Tuple[int, int] = (160, 160),
                   objects_per_image: Tuple[int, int] = (2, 4), object_side: Tuple[int, int] = (18, 60),
                   textured_prob: float = 0.5, required: Sequence[Tuple[str, str]] = (), required_prob: float = 0.0,
                   unseen: Sequence[Tuple[str, str]] = ()) -> Dict[str, str]:
    """Draw ``num_images`` images into ``folder/images`` and write ``folder/detection.json`` and
    ``folder/grounding.json``.

    Objects are drawn uniformly from ``combos``; with ``required`` each object is drawn from it with probability
    ``required_prob`` (the test split uses this to hold many unseen objects; the training split to draw objects in
    unnamed colours). ``categories`` (all combinations the detection json lists, one category per distinct
    :func:`combination_name`, ids 1..K in this order) must include ``combos`` and ``required``. Returns
    :func:`split_paths`.
    """
    width, height = image_size
    rng = random.Random(seed)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    name_ids: Dict[str, int] = {}
    for combo in categories:
        name_ids.setdefault(combination_name(*combo), len(name_ids) + 1)
    cat_ids = {tuple(combo): name_ids[combination_name(*combo)] for combo in categories}
    missing = [c for c in list(combos) + list(required) if tuple(c) not in cat_ids]
    if missing:
        raise ValueError("combinations {} are not among the categories".format(missing))
    unseen = set(map(tuple, unseen))
    det_images, det_annotations, gnd_images, gnd_annotations = [], [], [], []
    for index in range(num_images):
        count = rng.randint(*objects_per_image)
        picks = [rng.choice(list(required)) if required and rng.random() < required_prob else rng.choice(list(combos))
                 for _ in range(count)]
        image = draw_background(width, height, rng, textured_prob)
        objects = place_objects(picks, width, height, rng, *object_side)
        draw_objects(image, objects, rng)
        file_name = "{:06d}.png".format(index)
        image.save(os.path.join(folder, "images", file_name))
        caption, spans = make_caption(objects, rng, min(width, height))
        image_id = index + 1
        record = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        det_images.append(dict(record))
        gnd_images.append(dict(record, caption=caption, dataset_name="synthetic_shapes",
                               tokens_positive_eval=spans))
        for obj, span in zip(objects, spans):
            bbox = _xywh(obj["box"])
            ann = {"id": len(det_annotations) + 1, "image_id": image_id, "bbox": bbox, "area": bbox[2] * bbox[3],
                   "iscrowd": 0, "category_id": cat_ids[(obj["colour"], obj["shape"])]}
            det_annotations.append(ann)
            gnd_annotations.append(dict(ann, category_id=1, tokens_positive=span,
                                        phrase=caption[span[0][0]:span[0][1]]))
    first = {}
    for combo in categories:
        first.setdefault(name_ids[combination_name(*combo)], tuple(combo))
    det_categories = [{"id": i, "name": combination_name(*c), "supercategory": c[1], "seen": c not in unseen}
                      for i, c in sorted(first.items())]
    paths = split_paths(folder)
    _write_json(paths["detection"], {"images": det_images, "annotations": det_annotations,
                                     "categories": det_categories})
    _write_json(paths["grounding"], {"images": gnd_images, "annotations": gnd_annotations,
                                     "categories": [{"id": 1, "name": "object", "supercategory": "object"}]})
    return paths


def split_paths(folder: str) -> Dict[str, str]:
    """``{"detection", "grounding", "images"}`` paths of the split written in ``folder``."""
    return {"detection": os.path.join(folder, "detection.json"), "grounding": os.path.join(folder, "grounding.json"),
            "images": os.path.join(folder, "images")}


def _write_json(path: str, data: dict):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _vocabulary(colours: Sequence[str], shapes: Sequence[str], unseen, image_size, object_side):
    """``(all combinations, unseen, seen, object side range)`` after checking the colours."""
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError("unknown colours {} (known: {})".format(unknown, list(COLOURS)))
    all_combos = [(c, s) for c in colours for s in shapes]
    unseen = [tuple(u) for u in (default_unseen(colours, shapes) if unseen is None else unseen)]
    if object_side is None:
        side = min(image_size)
        object_side = (max(8, round(0.11 * side)), round(0.375 * side))
    return all_combos, unseen, [c for c in all_combos if c not in unseen], tuple(object_side)


# Share of training objects drawn in an unnamed colour or shape when those are asked for (the quickstart's default,
# chosen by the sweep in configs/quickstart/glip_tiny_shapes_minilm.yaml).
DEFAULT_UNNAMED_PROB = 0.3


def _unnamed_combinations(unnamed_colours: Sequence[str], unnamed_shapes: Sequence[str], colours: Sequence[str],
                          shapes: Sequence[str]) -> List[Tuple[str, str]]:
    """Every shape in every unnamed colour, then every colour of every unnamed shape, after checking the names."""
    unknown = [c for c in unnamed_colours if c not in UNNAMED_COLOURS]
    if unknown:
        raise ValueError("unknown unnamed colours {} (known: {})".format(unknown, list(UNNAMED_COLOURS)))
    unknown = [s for s in unnamed_shapes if s not in UNNAMED_SHAPES]
    if unknown:
        raise ValueError("unknown unnamed shapes {} (known: {})".format(unknown, list(UNNAMED_SHAPES)))
    return [(c, s) for c in unnamed_colours for s in shapes] + [(c, s) for c in colours for s in unnamed_shapes]


def generate_captions_split(root: str, num_images: int = 600, seed: int = 0,
                            image_size: Tuple[int, int] = (160, 160), objects_per_image: Tuple[int, int] = (2, 4),
                            object_side: Optional[Tuple[int, int]] = None, textured_prob: float = 0.5,
                            colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES,
                            unseen: Optional[Sequence[Tuple[str, str]]] = None, unseen_prob: float = 0.5) -> dict:
    """Write ``root/captions``: ``images/<n>.png`` with ``images/<n>.txt`` holding its caption, and the withheld
    boxes ``withheld/detection.json`` (all combinations, ``"seen"`` flags) / ``withheld/grounding.json``.

    Each object is an unseen combination with probability ``unseen_prob``, else a seen one; the
    arguments are those of :func:`generate_synthetic_dataset` (the same ones give the same vocabulary), and the
    images differ from the train / test splits' (seed ``2 * seed + 3``). Returns ``{"images", "detection",
    "grounding"}`` paths.
    """
    all_combos, unseen, seen, object_side = _vocabulary(colours, shapes, unseen, image_size, object_side)
    folder = os.path.join(root, "captions")
    withheld = os.path.join(folder, "withheld")
    paths = generate_split(folder, num_images, combos=seen, categories=all_combos, seed=seed * 2 + 3,
                           image_size=tuple(image_size), objects_per_image=tuple(objects_per_image),
                           object_side=object_side, textured_prob=textured_prob, required=unseen,
                           required_prob=unseen_prob, unseen=unseen)
    os.makedirs(withheld, exist_ok=True)
    with open(paths["grounding"]) as f:
        records = json.load(f)["images"]
    for record in records:
        stem = os.path.splitext(record["file_name"])[0]
        with open(os.path.join(paths["images"], stem + ".txt"), "w") as f:
            f.write(record["caption"] + "\n")
    out = {"images": paths["images"]}
    for kind in ("detection", "grounding"):
        out[kind] = os.path.join(withheld, kind + ".json")
        os.replace(paths[kind], out[kind])
    logger.info("synthetic shapes: wrote %d captions-only images to %s (boxes withheld in %s)", num_images, folder,
                withheld)
    return out


def generate_synthetic_dataset(root: str, num_train: int = 600, num_test: int = 100, seed: int = 0,
                               image_size: Tuple[int, int] = (160, 160), objects_per_image: Tuple[int, int] = (2, 4),
                               object_side: Optional[Tuple[int, int]] = None, textured_prob: float = 0.5,
                               colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES,
                               unseen: Optional[Sequence[Tuple[str, str]]] = None,
                               unnamed_colours: Sequence[str] = (), unnamed_shapes: Sequence[str] = (),
                               unnamed_prob: float = DEFAULT_UNNAMED_PROB) -> dict:
    """Write the ``train`` and ``test`` splits under ``root`` and ``root/meta.json``; returns the meta dict.

    ``train`` uses only the seen combinations; ``test`` draws about half of its objects from the ``unseen`` ones
    (default :func:`default_unseen`). With ``unnamed_colours`` (keys of :data:`UNNAMED_COLOURS`) or
    ``unnamed_shapes`` (of :data:`UNNAMED_SHAPES`) each training object is, with probability ``unnamed_prob``,
    one in such a colour, named by its shape alone ("circle", "a small circle"), or of such a shape, named by its
    colour ("red shape"); the test split never holds them. The same arguments always give the same files. The meta
    dict holds the arguments, ``seen`` / ``unseen`` category names and per split the ``detection`` /
    ``grounding`` json paths and ``images`` folder.
    """
    all_combos, unseen, seen, object_side = _vocabulary(colours, shapes, unseen, image_size, object_side)
    unnamed = _unnamed_combinations(unnamed_colours, unnamed_shapes, colours, shapes)
    if not 0.0 <= unnamed_prob <= 1.0:
        raise ValueError("unnamed_prob must be in [0, 1], got {}".format(unnamed_prob))
    common = dict(image_size=tuple(image_size), objects_per_image=tuple(objects_per_image),
                  object_side=tuple(object_side), textured_prob=textured_prob, unseen=unseen)
    meta = {"seed": seed, "colours": list(colours), "shapes": list(shapes), "num_train": num_train,
            "num_test": num_test, "image_size": list(image_size), "unnamed_colours": list(unnamed_colours),
            "unnamed_shapes": list(unnamed_shapes),
            "unnamed_prob": float(unnamed_prob) if unnamed else 0.0,
            "seen": [combination_name(*c) for c in seen], "unseen": [combination_name(*c) for c in unseen]}
    splits = {"train": dict(num_images=num_train, combos=seen, categories=seen + unnamed, seed=seed * 2 + 1,
                            required=unnamed, required_prob=unnamed_prob if unnamed else 0.0),
              "test": dict(num_images=num_test, combos=seen, categories=all_combos, seed=seed * 2 + 2,
                           required=unseen, required_prob=0.5)}
    for split, args in splits.items():
        folder = os.path.join(root, split)
        meta[split] = generate_split(folder, **args, **common)
        logger.info("synthetic shapes: wrote %d %s images to %s", args["num_images"], split, folder)
    _write_json(os.path.join(root, "meta.json"), meta)
    return meta
