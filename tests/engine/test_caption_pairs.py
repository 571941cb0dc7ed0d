"""The inputs of the pseudo-labelling tool: image folders with .txt captions, COCO-captions json, caption TSVs."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from glip.engine.caption_pairs import read_pairs


def _png(path, w=20, h=10, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_folder_pairs_images_with_their_text_files(tmp_path, caplog):
    _png(tmp_path / "b.png")
    (tmp_path / "b.txt").write_text("a cat\non a mat\n")
    _png(tmp_path / "sub" / "a.jpg", seed=1)
    (tmp_path / "sub" / "a.txt").write_text("two dogs")
    _png(tmp_path / "nocaption.png")
    pairs = read_pairs(str(tmp_path))
    assert [(p.key, p.caption) for p in pairs] == [("b", "a cat on a mat"), ("sub/a", "two dogs")]
    b64, image = pairs[0].load()
    assert image.size == (20, 10) and base64.b64decode(b64) == (tmp_path / "b.png").read_bytes()
    assert "1 images have no .txt caption" in caplog.text
    _png(tmp_path / "b.jpg")  # b.txt also captions it: the key "b" would repeat
    with pytest.raises(ValueError, match="repeated keys \\['b'\\]"):
        read_pairs(str(tmp_path))


def test_coco_captions_first_or_all(tmp_path):
    _png(tmp_path / "imgs" / "x.png")
    data = {"images": [{"id": 7, "file_name": "x.png"}],
            "annotations": [{"id": 1, "image_id": 7, "caption": "A  red ball."},
                            {"id": 2, "image_id": 7, "caption": "a ball"}]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(data))
    pairs = read_pairs(str(path), image_root=str(tmp_path / "imgs"))
    assert [(p.key, p.caption) for p in pairs] == [("7", "A red ball.")]
    assert pairs[0].load()[1].size == (20, 10)
    pairs = read_pairs(str(path), image_root=str(tmp_path / "imgs"), all_captions=True)
    assert [p.key for p in pairs] == ["7_1", "7_2"]


def test_caption_tsvs(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (1, 2, 3)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    (tmp_path / "pairs.tsv").write_text("k1\ta red ball\t{}\n".format(b64))
    pairs = read_pairs(str(tmp_path / "pairs.tsv"))
    assert [(p.key, p.caption) for p in pairs] == [("k1", "a red ball")] and pairs[0].load()[0] == b64
    # A dataset yaml with inference-caption rows (the reference's googlecc / bing forms).
    (tmp_path / "img.tsv").write_text("k1\t{}\nk2\t{}\n".format(b64, b64))
    (tmp_path / "label.tsv").write_text('k1\t{"caption": "one"}\nk2\t[{"caption": "two"}]\n')
    (tmp_path / "data.yaml").write_text("img: img.tsv\nlabel: label.tsv\n")
    pairs = read_pairs(str(tmp_path / "data.yaml"))
    assert [(p.key, p.caption) for p in pairs] == [("k1", "one"), ("k2", "two")]
    assert pairs[1].load()[1].size == (6, 4)
    (tmp_path / "bad.tsv").write_text("k1\tonly two columns\n")
    with pytest.raises(ValueError, match="got 2 columns"):
        read_pairs(str(tmp_path / "bad.tsv"))
    with pytest.raises(FileNotFoundError):
        read_pairs(str(tmp_path / "missing.json.gz"))
