"""The generated coloured-shapes grounding dataset: determinism, the held-out split, caption spans, pixels, and
loading through the project's dataset classes."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glip.data.datasets import synthetic as S


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    meta = S.generate_synthetic_dataset(str(root), num_train=12, num_test=8, seed=3)
    return root, meta


def _load(path):
    return json.loads(Path(path).read_text())


def test_default_unseen_is_a_shifted_diagonal():
    unseen = S.default_unseen(["red", "green", "blue", "yellow"], ["circle", "square", "triangle", "star"])
    assert unseen == [("red", "triangle"), ("green", "star"), ("blue", "circle"), ("yellow", "square")]


def test_same_seed_same_files_other_seed_other_files(tmp_path, data):
    root, _ = data
    again = tmp_path / "again"
    S.generate_synthetic_dataset(str(again), num_train=12, num_test=8, seed=3)
    for rel in ("train/detection.json", "train/grounding.json", "test/detection.json", "test/grounding.json"):
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    for image in sorted((root / "train/images").iterdir()):
        assert image.read_bytes() == (again / "train/images" / image.name).read_bytes()
    other = tmp_path / "other"
    S.generate_synthetic_dataset(str(other), num_train=12, num_test=8, seed=4)
    assert (root / "train/grounding.json").read_bytes() != (other / "train/grounding.json").read_bytes()


def test_unseen_combinations_never_appear_in_training(data):
    _, meta = data
    assert set(meta["unseen"]) == {"red triangle", "green star", "blue circle", "yellow square"}
    assert len(meta["seen"]) == 12 and not set(meta["seen"]) & set(meta["unseen"])
    train_det, train_gnd = _load(meta["train"]["detection"]), _load(meta["train"]["grounding"])
    assert {c["name"] for c in train_det["categories"]} == set(meta["seen"])
    for image in train_gnd["images"]:
        for name in meta["unseen"]:
            colour, shape = name.split()
            assert not re.search(r"\b{}\b(?: \w+)? \b{}\b".format(colour, shape), image["caption"]), image["caption"]
    test_det = _load(meta["test"]["detection"])
    assert {c["name"] for c in test_det["categories"]} == set(meta["seen"]) | set(meta["unseen"])
    flags = {c["name"]: c["seen"] for c in test_det["categories"]}
    assert all(flags[n] for n in meta["seen"]) and not any(flags[n] for n in meta["unseen"])
    unseen_ids = {c["id"] for c in test_det["categories"] if not c["seen"]}
    assert sum(a["category_id"] in unseen_ids for a in test_det["annotations"]) >= 4


@pytest.mark.parametrize("split", ["train", "test"])
def test_caption_spans_name_each_box(data, split):
    _, meta = data
    det, gnd = _load(meta[split]["detection"]), _load(meta[split]["grounding"])
    names = {c["id"]: c["name"] for c in det["categories"]}
    captions = {im["id"]: im["caption"] for im in gnd["images"]}
    assert len(det["annotations"]) == len(gnd["annotations"]) > 0
    for d, g in zip(det["annotations"], gnd["annotations"]):
        assert d["bbox"] == g["bbox"] and d["image_id"] == g["image_id"]
        (beg, end), = g["tokens_positive"]
        phrase = captions[g["image_id"]][beg:end]
        assert phrase == g["phrase"]
        assert phrase.split()[-2:] == names[d["category_id"]].split()
        assert phrase.split()[0] in ("small", "large", names[d["category_id"]].split()[0])
    for image in gnd["images"]:
        assert image["caption"].startswith("a ")
        spans = image["tokens_positive_eval"]
        assert len(spans) == sum(a["image_id"] == image["id"] for a in gnd["annotations"])


def test_boxes_are_inside_disjoint_and_filled_with_their_colour(data):
    _, meta = data
    det = _load(meta["train"]["detection"])
    names = {c["id"]: c["name"] for c in det["categories"]}
    by_image = {}
    for a in det["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for image in det["images"]:
        pixels = np.asarray(Image.open(Path(meta["train"]["images"]) / image["file_name"]).convert("RGB"))
        assert pixels.shape == (image["height"], image["width"], 3) == (160, 160, 3)
        anns = by_image.get(image["id"], [])
        assert 1 <= len(anns) <= 4
        for i, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
            assert 17 <= max(w, h) <= 61
            for b in anns[i + 1:]:
                bx, by, bw, bh = b["bbox"]
                assert x + w <= bx or bx + bw <= x or y + h <= by or by + bh <= y
            colour = S.COLOURS[names[a["category_id"]].split()[0]]
            centre = pixels[int(y + h / 2), int(x + w / 2)].astype(int)
            assert np.abs(centre - np.array(colour)).max() <= 20, (names[a["category_id"]], centre)


def test_star_box_is_tight_and_triangle_apex_on_top():
    star = S.shape_polygon("star", [0, 0, 100, 100])
    assert len(star) == 10
    assert star[0] == pytest.approx((50.0, 0.0))
    assert star[4][1] == pytest.approx(50 + 50 * math.sin(-math.pi / 2 + 4 * math.pi / 5))  # a lower point
    box = S.tight_box("star", [0, 0, 100, 100])
    assert box[1] == pytest.approx(0.0) and box[3] == pytest.approx(50 + 50 * math.cos(math.pi / 5))
    assert box[3] < 100 and box[0] > 0
    assert S.shape_polygon("triangle", [10, 20, 30, 60]) == [(20.0, 20), (30, 60), (10, 60)]
    assert S.tight_box("circle", [1, 2, 3, 4]) == [1, 2, 3, 4]


def test_caption_words_and_relations():
    left = {"colour": "red", "shape": "circle", "box": [0, 40, 30, 70]}
    right = {"colour": "blue", "shape": "square", "box": [100, 40, 150, 90]}
    below = {"colour": "green", "shape": "star", "box": [0, 120, 20, 140]}

    class Always:
        def random(self):
            return 0.0

    caption, spans = S.make_caption([left, right, below], Always(), image_side=160)
    assert caption == "a small red circle to the left of a large blue square and a small green star"
    assert [caption[s[0][0]:s[0][1]] for s in spans] == ["small red circle", "large blue square", "small green star"]
    assert S._relation(below["box"], left["box"]) == "below"
    assert S._relation(left["box"], below["box"]) == "above"
    assert S._relation(right["box"], left["box"]) == "to the right of"


def test_splits_load_through_the_grounding_datasets(data):
    from glip.data.datasets.coco_grounding import CocoGrounding
    from glip.data.datasets.modulated import ModulatedDataset
    from glip.data.positive_map import load_tokenizer

    _, meta = data
    tokenizer = load_tokenizer()
    grounding = ModulatedDataset(meta["train"]["images"], meta["train"]["grounding"], tokenizer=tokenizer,
                                 is_train=True)
    _, target, _ = grounding[0]
    caption = target.get_field("caption")
    ids = tokenizer(caption)["input_ids"]
    for row, span in zip(target.get_field("positive_map"), target.get_field("tokens_positive")):
        tokens = tokenizer.convert_ids_to_tokens([ids[i] for i in torch.nonzero(row).flatten().tolist()])
        (beg, end), = span
        assert tokens == caption[beg:end].split()
    detection = CocoGrounding(meta["train"]["images"], meta["train"]["detection"], tokenizer=tokenizer,
                              separation_tokens=". ")
    _, target, _ = detection[0]
    prompt = target.get_field("caption")
    assert sorted(prompt.rstrip(". ").split(". ")) == sorted(meta["seen"])
    assert len(target) == len(target.get_field("positive_map")) >= 1


def test_captions_only_split_withholds_its_boxes(tmp_path, data):
    _, meta = data
    paths = S.generate_captions_split(str(tmp_path), num_images=10, seed=3)
    folder = tmp_path / "captions"
    assert sorted(p.name for p in folder.iterdir()) == ["images", "withheld"]
    pngs = sorted(p for p in (folder / "images").iterdir() if p.suffix == ".png")
    assert len(pngs) == 10 and all(p.with_suffix(".txt").is_file() for p in pngs)
    grounding = _load(paths["grounding"])
    captions = {im["file_name"]: im["caption"] for im in grounding["images"]}
    for png in pngs:
        assert png.with_suffix(".txt").read_text().strip() == captions[png.name]
    # The withheld boxes: every caption phrase has its box; unseen combinations are among them and in captions.
    detection = _load(paths["detection"])
    names = {c["id"]: c["name"] for c in detection["categories"]}
    assert set(names.values()) == set(meta["seen"]) | set(meta["unseen"])
    unseen_boxes = [a for a in detection["annotations"] if names[a["category_id"]] in meta["unseen"]]
    assert len(unseen_boxes) >= 3 and len(detection["annotations"]) == len(grounding["annotations"])
    assert any(re.search(r"\b{}\b".format(n), " ".join(captions.values())) for n in meta["unseen"])
    # Not the training images; the same seed gives the same split.
    assert (folder / "images" / "000000.png").read_bytes() != Path(meta["train"]["images"], "000000.png").read_bytes()
    again = tmp_path / "again"
    S.generate_captions_split(str(again), num_images=10, seed=3)
    assert (again / "captions/withheld/grounding.json").read_bytes() == Path(paths["grounding"]).read_bytes()


def test_unnamed_colours_are_training_objects_named_by_their_shape(tmp_path):
    meta = S.generate_synthetic_dataset(str(tmp_path), num_train=40, num_test=8, seed=3,
                                        unnamed_colours=["black", "pink"], unnamed_prob=0.5)
    assert meta["unnamed_colours"] == ["black", "pink"] and meta["unnamed_prob"] == 0.5
    det, gnd = _load(meta["train"]["detection"]), _load(meta["train"]["grounding"])
    names = {c["id"]: c["name"] for c in det["categories"]}
    assert list(names.values()) == meta["seen"] + list(S.SHAPES)  # one category per distinct name
    shape_only = [a for a in det["annotations"] if names[a["category_id"]] in S.SHAPES]
    assert 0.3 * len(det["annotations"]) <= len(shape_only) <= 0.7 * len(det["annotations"])
    images = {im["id"]: im for im in det["images"]}
    palette = {name: np.array(rgb) for name, rgb in S.UNNAMED_COLOURS.items() if name in ("black", "pink")}
    for a in shape_only:
        x, y, w, h = a["bbox"]
        pixels = np.asarray(Image.open(Path(meta["train"]["images"]) / images[a["image_id"]]["file_name"]))
        centre = pixels[int(y + h / 2), int(x + w / 2), :3].astype(int)
        assert min(np.abs(centre - rgb).max() for rgb in palette.values()) <= 20, centre
    captions = {im["id"]: im["caption"] for im in gnd["images"]}
    for a in gnd["annotations"]:
        words = a["phrase"].split()
        assert words[-1] in S.SHAPES and len(words) in (1, 2, 3)
        assert captions[a["image_id"]][a["tokens_positive"][0][0]:a["tokens_positive"][0][1]] == a["phrase"]
    shape_phrases = sum(len(a["phrase"].split()) == 1 or a["phrase"].split()[0] in ("small", "large")
                        and len(a["phrase"].split()) == 2 for a in gnd["annotations"])
    assert shape_phrases == len(shape_only)
    assert not any(w in c for c in captions.values() for w in ("black", "pink"))
    test = _load(meta["test"]["detection"])  # the held-out split is the usual 16 names
    assert [c["name"] for c in test["categories"]] == [S.combination_name(c, s) for c in S.COLOURS for s in S.SHAPES]


def test_unknown_unnamed_colour_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="unknown unnamed colours \\['red'\\]"):
        S.generate_synthetic_dataset(str(tmp_path), num_train=2, num_test=2, unnamed_colours=["red"])
    with pytest.raises(ValueError, match="unnamed_prob must be in \\[0, 1\\], got 1.5"):
        S.generate_synthetic_dataset(str(tmp_path), num_train=2, num_test=2, unnamed_colours=["black"],
                                     unnamed_prob=1.5)


def test_unnamed_shapes_are_training_objects_named_by_their_colour(tmp_path):
    meta = S.generate_synthetic_dataset(str(tmp_path), num_train=30, num_test=4, seed=5,
                                        unnamed_shapes=["hexagon", "cross"], unnamed_prob=0.5)
    assert meta["unnamed_shapes"] == ["hexagon", "cross"] and meta["unnamed_colours"] == []
    det, gnd = _load(meta["train"]["detection"]), _load(meta["train"]["grounding"])
    names = {c["id"]: c["name"] for c in det["categories"]}
    assert list(names.values()) == meta["seen"] + [c + " shape" for c in S.COLOURS]
    colour_only = [a for a in det["annotations"] if names[a["category_id"]].endswith(" shape")]
    assert 0.3 * len(det["annotations"]) <= len(colour_only) <= 0.7 * len(det["annotations"])
    for a in gnd["annotations"]:
        assert a["phrase"].split()[-1] in S.SHAPES + ("shape",)
    assert not any(w in im["caption"] for im in gnd["images"] for w in ("hexagon", "cross"))
    # a hexagon's box is its own: as wide as its square, 2 * sin(60 deg) of its height
    x0, y0, x1, y1 = S.tight_box("hexagon", [0, 0, 40, 40])
    assert (x0, x1) == (0, 40) and y1 - y0 == pytest.approx(40 * math.sin(math.pi / 3))
    with pytest.raises(ValueError, match="unknown unnamed shapes \\['oval'\\]"):
        S.generate_synthetic_dataset(str(tmp_path / "bad"), num_train=2, num_test=2, unnamed_shapes=["oval"])
