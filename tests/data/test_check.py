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


# --- quick_check: the cheap checks the tools make before a run ---------------------------------------------------

def _words(text):
    """A whitespace tokenizer's offsets with [CLS] / [SEP] as (0, 0): one token per word."""
    import re

    return [(0, 0)] + [(m.start(), m.end()) for m in re.finditer(r"\S+", text)] + [(0, 0)]


def test_quick_check_detection_problems(tmp_path):
    from glip.data.check import dataset_inputs, quick_check

    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10},
              {"id": 2, "file_name": "gone.jpg", "width": 20, "height": 10},
              {"id": 3, "file_name": "text.jpg", "width": 20, "height": 10}]
    anns = [{"image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1},
            {"image_id": 3, "bbox": [1, 1, 5, 5], "category_id": 9}]
    img_dir, ann = write_coco(tmp_path, images, anns, [{"id": 1, "name": "x"}])
    (tmp_path / "images/gone.jpg").unlink()
    (tmp_path / "images/text.jpg").write_text("not an image")
    inputs = dataset_inputs("COCODataset", {"ann_file": ann, "root": img_dir})
    assert inputs == {"ann_file": ann, "yaml_file": None, "img_dir": img_dir, "vg_img_dir": None, "grounding": False}
    errors = quick_check(inputs).errors
    assert len(errors) == 3
    assert errors[0].startswith("1 annotations use category ids outside 'categories' (first: annotation 2 of image "
                                "3, category_id 9;")
    assert errors[1] == "1 image files missing (first: {}/gone.jpg)".format(img_dir)
    assert errors[2] == "1 files that do not decode as images (first: {}/text.jpg (UnidentifiedImageError))".format(
        img_dir)


def test_quick_check_files_and_folders(tmp_path):
    from glip.data.check import quick_check

    report = quick_check({"ann_file": str(tmp_path / "no.json"), "img_dir": str(tmp_path / "no_dir")})
    assert report.errors == ["image folder not found: {}".format(tmp_path / "no_dir"),
                             "annotation file not found: {}".format(tmp_path / "no.json")]
    (tmp_path / "bad.json").write_text("{")
    assert "not valid json" in quick_check({"ann_file": str(tmp_path / "bad.json")}).errors[0]
    (tmp_path / "d.yaml").write_text("img: img.tsv\nlabelmap: labelmap.json\n")
    assert quick_check({"yaml_file": str(tmp_path / "d.yaml")}).errors == [
        "2 files named in {} missing (first: {})".format(tmp_path / "d.yaml", tmp_path / "img.tsv")]


def test_quick_check_captions(tmp_path):
    from glip.data.check import quick_check

    long = " ".join("w{}".format(i) for i in range(10))  # 12 tokens with [CLS] / [SEP]
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10, "caption": "a cat"},
              {"id": 2, "file_name": "b.jpg", "width": 20, "height": 10, "caption": " "},
              {"id": 3, "file_name": "c.jpg", "width": 20, "height": 10, "caption": long}]
    w8 = long.index("w8")
    anns = [{"image_id": 1, "bbox": [1, 1, 5, 5], "tokens_positive": [[2, 5]]},
            {"image_id": 3, "bbox": [1, 1, 5, 5], "tokens_positive": [[0, 2]]},
            {"image_id": 3, "bbox": [1, 1, 5, 5], "tokens_positive": [[w8, w8 + 2]]}]
    img_dir, ann = write_coco(tmp_path, images, anns, [])
    inputs = {"ann_file": ann, "img_dir": img_dir, "grounding": True}
    # a limit of 10 keeps [CLS] w0 .. w7 [SEP]: the box on "w8" loses its phrase
    report = quick_check(inputs, _words, max_query_len=10)
    assert report.errors == ["1 images with an empty caption (first: 2)",
                             "1 captions longer than MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN cut off boxed phrases; "
                             "shorten them or raise MAX_QUERY_LEN (first: image 3: 12 tokens, the phrase 'w8' lies "
                             "past token 10)"]
    # a limit of 11 keeps w8: only text without a box is cut (a warning)
    report = quick_check(inputs, _words, max_query_len=11)
    assert report.errors == ["1 images with an empty caption (first: 2)"]
    assert report.warnings == ["1 captions are longer than 11 tokens (truncated; no boxed phrase is lost)"]
