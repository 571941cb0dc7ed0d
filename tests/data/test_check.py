"""Dataset folder validation (glip.data.check, used by tools/check_dataset.py)."""
import json

from tiny_datasets import image_b64, write_coco

from glip.data.check import check_coco, check_tsv


def test_coco_ok_and_problems(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10},
              {"id": 2, "file_name": "missing.jpg", "width": 20, "height": 10},
              {"id": 3, "file_name": "c.jpg", "width": 20, "height": 10}]
    anns = [{"image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1},
            {"image_id": 1, "bbox": [15, 1, 10, 5], "category_id": 1},     # outside: warning
            {"image_id": 1, "bbox": [1, 1, 1, 5], "category_id": 1},       # degenerate: warning
            {"image_id": 9, "bbox": [1, 1, 5, 5], "category_id": 1},       # unknown image: error
            {"image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 4}]       # unknown category: error
    img_dir, ann = write_coco(tmp_path, images, anns, [{"id": 1, "name": "x"}])
    (tmp_path / "images" / "missing.jpg").unlink()
    report = check_coco(ann, img_dir)
    assert not report.ok
    text = report.format()
    assert "1 annotations of unknown images" in text and "1 annotations with unknown category_id" in text
    assert "missing.jpg" in text and "1 image files missing" in text
    assert any("outside" in w for w in report.warnings) and any("<= 1" in w for w in report.warnings)
    assert any("images without annotations" in w and "3" in w for w in report.warnings)
    good = check_coco(ann, img_dir, check_images=False)
    assert report.stats["images"] == 3 and len(good.errors) == 2


def test_missing_and_broken_json(tmp_path):
    assert "not found" in check_coco(str(tmp_path / "nope.json"), None).errors[0]
    (tmp_path / "bad.json").write_text("{")
    assert "not valid json" in check_coco(str(tmp_path / "bad.json"), None).errors[0]


def test_mdetr_spans(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10, "caption": "a cat"}]
    anns = [{"image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1, "tokens_positive": [[2, 5]]},
            {"image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1, "tokens_positive": [[2, 9]]}]
    img_dir, ann = write_coco(tmp_path, images, anns, [])
    report = check_coco(ann, img_dir, grounding=True)
    assert report.errors == ["1 annotations whose tokens_positive are missing or outside the caption: 2"]


def test_tsv(tmp_path):
    (tmp_path / "img.tsv").write_text("1\t{}\n2\tnot-base64\n".format(image_b64(8, 8)))
    (tmp_path / "label.tsv").write_text('1\t[{"rect": [0, 0, 4, 4], "class": "cat"}]\n2\t[{"class": "emu"}]\n')
    (tmp_path / "labelmap.json").write_text(json.dumps({"cat": 1}))
    (tmp_path / "d.yaml").write_text("img: img.tsv\nlabel: label.tsv\nlabelmap: labelmap.json\n")
    report = check_tsv(str(tmp_path / "d.yaml"))
    assert report.stats == {"rows": 2, "classes": 1}
    assert any("do not decode" in e for e in report.errors)
    assert any("do not parse: 1" in e for e in report.errors)
    (tmp_path / "e.yaml").write_text("img: img.tsv\nlabelmap: nothere.json\n")
    assert "files named in the yaml missing" in check_tsv(str(tmp_path / "e.yaml")).errors[0]
