"""Few-shot subsets: exactly N boxes per class, deterministic for a seed, whole images preferred."""
import json
import random
from collections import Counter

import pytest

from glip.data.fewshot import (boxes_per_category, few_shot_file_name, main, sample_few_shot,
                               write_few_shot_files)


def make_coco(num_images=30, seed=0):
    """Images with 1-3 boxes of 3 classes (class 3 rarer), plus a crowd box."""
    rng = random.Random(seed)
    images, anns = [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "file_name": "{}.jpg".format(i), "width": 100, "height": 80})
        for _ in range(rng.randint(1, 3)):
            cat = rng.choice([1, 1, 2, 2, 3])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [1, 2, 10, 10],
                         "area": 100.0, "iscrowd": 0})
    anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500.0,
                 "iscrowd": 1})
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    return {"info": {"v": 1}, "images": images, "annotations": anns, "categories": cats}


@pytest.mark.parametrize("shots", [1, 3, 5])
@pytest.mark.parametrize("seed", [3, 30, 300])
def test_exactly_n_boxes_per_class(shots, seed):
    coco = make_coco()
    sub = sample_few_shot(coco, shots, seed)
    assert boxes_per_category(sub) == {1: shots, 2: shots, 3: shots}
    assert all(a["iscrowd"] == 0 for a in sub["annotations"])
    kept_images = {img["id"] for img in sub["images"]}
    assert {a["image_id"] for a in sub["annotations"]} == kept_images  # no image without boxes
    originals = {a["id"]: a for a in coco["annotations"]}
    assert all(originals[a["id"]] == a for a in sub["annotations"])  # records unchanged
    assert sub["categories"] == coco["categories"] and sub["info"] == coco["info"]


def test_stable_for_a_seed_and_independent_of_global_random_state():
    coco = make_coco()
    random.seed(1)
    first = sample_few_shot(coco, 3, 30)
    random.seed(2)
    random.random()
    second = sample_few_shot(coco, 3, 30)
    assert first == second
    assert sample_few_shot(coco, 3, 300)["images"] != first["images"]
    assert coco == make_coco()  # input not modified


def test_whole_images_are_preferred():
    # Image 1 has two boxes of class 1 and one of class 2; for 2 shots it fits whole, so all three are kept.
    coco = {"images": [{"id": 1}, {"id": 2}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 1},
                            {"id": 3, "image_id": 1, "category_id": 2}, {"id": 4, "image_id": 2, "category_id": 2}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for seed in range(5):
        sub = sample_few_shot(coco, 2, seed)
        assert [a["id"] for a in sub["annotations"]] == [1, 2, 3, 4]
    # One shot: no image fits whole for class 1, so one of image 1's class-1 boxes is taken alone.
    sub = sample_few_shot(coco, 1, 0)
    assert Counter(a["category_id"] for a in sub["annotations"]) == {1: 1, 2: 1}


def test_rare_class_keeps_what_it_has(caplog):
    coco = make_coco()
    have = boxes_per_category(coco)[3]
    sub = sample_few_shot(coco, have + 5, 3)
    assert boxes_per_category(sub)[3] == have
    assert "fewer than" in caplog.text


def test_unknown_category_and_bad_shots_rejected():
    coco = make_coco()
    coco["annotations"][0]["category_id"] = 9
    with pytest.raises(ValueError, match=r"\[9\]"):
        sample_few_shot(coco, 1, 3)
    with pytest.raises(ValueError):
        sample_few_shot(make_coco(), 0, 3)


def test_files_are_written_with_the_odinw_names(tmp_path):
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps(make_coco()))
    paths = write_few_shot_files(str(ann), [1, 3], [3, 30])
    assert sorted(p.split("/")[-1] for p in paths) == sorted(
        few_shot_file_name(n, s) for n in (1, 3) for s in (3, 30))
    assert few_shot_file_name(5, 300, "val") == "fewshot_val_shot5_seed300.json"
    assert json.loads((tmp_path / "fewshot_train_shot3_seed30.json").read_text()) == sample_few_shot(
        make_coco(), 3, 30)
    assert main(["--ann-file", str(ann), "--shots", "2", "--seeds", "7", "--out-dir", str(tmp_path / "o")]) == 0
    assert boxes_per_category(json.loads((tmp_path / "o" / "fewshot_train_shot2_seed7.json").read_text())) == {
        1: 2, 2: 2, 3: 2}
