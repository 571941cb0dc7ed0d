"""Objects365-style TSV and LVIS json on tiny generated data."""
import json
import random

import pytest
import torch
from tiny_datasets import image_b64, write_coco

from glip.data.datasets.lvis import LvisDetection
from glip.data.datasets.tsv import Object365DetectionTSV, ODTSVDataset, TSVFile
from glip.data.positive_map import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def o365(tmp_path):
    rows = [("101", 40, 30, [{"rect": [2, 3, 20, 25], "class": "cat"}, {"rect": [10, 10, 50, 29], "class": "dog"},
                             {"rect": [45, 5, 60, 9], "class": "dog"}]),
            ("abc", 20, 20, [])]
    with open(tmp_path / "img.tsv", "w") as f:
        for i, (key, w, h, _) in enumerate(rows):
            f.write("{}\t{}\n".format(key, image_b64(w, h, i)))
    with open(tmp_path / "label.tsv", "w") as f:
        for key, _, _, objs in rows:
            f.write("{}\t{}\n".format(key, json.dumps(objs)))
    with open(tmp_path / "hw.tsv", "w") as f:
        for key, w, h, _ in rows:
            f.write("{}\t{}\n".format(key, json.dumps([{"height": h, "width": w}])))
    (tmp_path / "labelmap.json").write_text(json.dumps({"label_to_idx": {"cat": 1, "dog": 2, "bird": 3, "cow": 4}}))
    (tmp_path / "train.yaml").write_text("img: img.tsv\nlabel: label.tsv\nhw: hw.tsv\nlabelmap: labelmap.json\n")
    return str(tmp_path / "train.yaml")


def test_tsv_file_random_access(tmp_path):
    (tmp_path / "x.tsv").write_text("a\t1\nb\t2\nc\t3\n")
    tsv = TSVFile(str(tmp_path / "x.tsv"))
    assert len(tsv) == 3 and tsv[2] == ["c", "3"] and tsv[0] == ["a", "1"]


def test_odtsv_detection(o365):
    ds = ODTSVDataset(o365)
    assert len(ds) == 2
    img, target, idx, scale = ds[0]
    assert img.size == (40, 30) and scale == 1.0
    assert target.get_field("labels").tolist() == [1, 2, 2]
    torch.testing.assert_close(target.bbox[1], torch.tensor([10.0, 10.0, 39.0, 29.0]))  # clipped to w-1
    assert ds.get_img_info(1) == {"height": 20, "width": 20}
    assert ds.get_img_id(0) == 101 and ds.get_img_id(1) == 1


def test_object365_grounding_sample(o365, tokenizer):
    ds = Object365DetectionTSV("object365_dt", o365, tokenizer=tokenizer, random_sample_negative=2,
                               control_probabilities=(0.0, 0.0, 1.0, 0.0), separation_tokens=". ",
                               rng=random.Random(0))
    img, target, idx = ds[0]
    # the third box lies outside the image after clipping (x1 = 45 > w-1) and is removed
    assert len(target) == 2 and target.get_field("labels").tolist() == [1, 2]
    caption = target.get_field("caption")
    spans = target.get_field("tokens_positive")
    assert caption[spans[0][0][0]: spans[0][0][1]] == "cat" and caption[spans[1][0][0]: spans[1][0][1]] == "dog"
    assert "background" not in caption
    od_map = target.get_field("positive_map_for_od_labels")
    pm = target.get_field("positive_map")
    assert od_map[pm[0].nonzero().flatten()].tolist() == [1.0]
    assert target.get_field("image_id").tolist() == [101]
    _, empty, _ = ds[1]
    assert len(empty) == 0 and empty.get_field("positive_map").shape == (0, 256)


def test_lvis_eval_sample(tmp_path):
    images = [{"id": 5, "file_name": "ignored.jpg", "width": 30, "height": 20,
               "coco_url": "http://images.cocodataset.org/val2017/000000000005.jpg"}]
    anns = [{"image_id": 5, "bbox": [1, 2, 10, 5], "category_id": 7}]
    cats = [{"id": 7, "name": "aerosol_can"}, {"id": 3, "name": "apple"}]
    _, ann = write_coco(tmp_path, images, anns, cats, write_images=False)
    from tiny_datasets import write_image
    write_image(tmp_path / "val2017" / "000000000005.jpg", 30, 20)
    ds = LvisDetection(str(tmp_path), ann, transforms=None)
    img, target, idx = ds[0]
    assert img.size == (30, 20)
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.0, 2.0, 10.0, 6.0]]))
    assert target["labels"].tolist() == [7]
    assert ds.categories() == {3: "apple", 7: "aerosol_can"}
