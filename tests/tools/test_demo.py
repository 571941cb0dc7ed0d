"""tools/demo.py: images and folders in, drawn PNGs and a json out; bad input reported clearly."""
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
GLIP_T = str(REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_tool = load_module("glip_tools_demo", REPO / "tools/demo.py")


@pytest.fixture(scope="module")
def tiny_demo():
    predictor_tests = load_module("_predictor_tests", REPO / "tests/engine/test_predictor.py")
    return predictor_tests.build_tiny_demo(min_image_size=64), predictor_tests.TINY_OPTS


def write_images(folder):
    rng = np.random.RandomState(0)
    rgb = (rng.rand(60, 80, 3) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "color.jpg")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(np.concatenate([rgb, np.full((60, 80, 1), 200, np.uint8)], 2), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(folder / "depth16.png")
    (folder / "readme.txt").write_text("not an image")  # ignored inside a folder (not an image suffix)


def test_folder_and_files_to_png_and_json(tiny_demo, tmp_path):
    demo, _ = tiny_demo
    images = tmp_path / "images"
    images.mkdir()
    write_images(images)
    extra = tmp_path / "extra.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(extra)
    out = tmp_path / "out"
    code = demo_tool.main(["--config-file", GLIP_T, "--image", str(images), str(extra), "--categories",
                           "cat, dog ,traffic light", "--threshold", "0.3", "--output", str(out),
                           "--batch-size", "2"], demo=demo)
    assert code == 0
    result = json.loads((out / "detections.json").read_text())
    assert result["entities"] == ["cat", "dog", "traffic light"]
    files = [Path(r["file"]).name for r in result["images"]]
    assert files == ["color.jpg", "depth16.png", "gray.png", "rgba.png", "extra.png"]
    for record in result["images"]:
        drawn = Image.open(record["output"])
        assert drawn.mode == "RGB" and drawn.size == (record["width"], record["height"])
        for det in record["detections"]:
            assert det["score"] > 0.3 and det["phrase"] == result["entities"][det["label"] - 1]
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= record["width"] and 0 <= y0 <= y1 <= record["height"]
    assert any(record["detections"] for record in result["images"])
    assert result["errors"] == []


def test_unreadable_file_is_named_and_skipped(tiny_demo, tmp_path, caplog):
    demo, _ = tiny_demo
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(good)
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = demo_tool.main(["--config-file", GLIP_T, "--image", str(bad), str(good), "--caption",
                               "a cat sitting on a wooden table", "--output", str(out)], demo=demo)
    assert code == 1
    assert "notes.txt" in caplog.text
    result = json.loads((out / "detections.json").read_text())
    assert [Path(e["file"]).name for e in result["errors"]] == ["notes.txt"]
    assert [Path(r["file"]).name for r in result["images"]] == ["good.png"]
    assert result["entities"] == ["a cat", "a wooden table"]


def one_error_line(capsys) -> str:
    """The single "error: ..." line a bad input prints on stderr (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("prompt, message", [
    (["--caption", "   "], "--caption is empty"),
    (["--categories", " , ,"], "no class names"),
])
def test_bad_prompt(tiny_demo, tmp_path, capsys, prompt, message):
    demo, _ = tiny_demo
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    code = demo_tool.main(["--config-file", GLIP_T, "--image", str(tmp_path / "a.png"), *prompt,
                           "--output", str(tmp_path / "out")], demo=demo)
    assert code == 2 and message in one_error_line(capsys)


def test_missing_image_path(tiny_demo, tmp_path, capsys):
    demo, _ = tiny_demo
    code = demo_tool.main(["--config-file", GLIP_T, "--image", str(tmp_path / "nowhere.jpg"),
                           "--caption", "a cat", "--output", str(tmp_path / "out")], demo=demo)
    assert code == 2 and "nowhere.jpg" in one_error_line(capsys)


def test_only_non_image_inputs_stop_before_the_model(tiny_demo, tmp_path, capsys):
    demo, _ = tiny_demo
    (tmp_path / "notes.jpg").write_text("hello")
    code = demo_tool.main(["--config-file", GLIP_T, "--image", str(tmp_path / "notes.jpg"), "--caption", "a cat",
                           "--output", str(tmp_path / "out")], demo=demo)
    assert code == 2 and "notes.jpg is not an image file" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_caption_and_categories_are_exclusive():
    with pytest.raises(SystemExit):
        demo_tool.build_parser().parse_args(["--config-file", GLIP_T, "--image", "a.jpg", "--caption", "a cat",
                                             "--categories", "cat"])


def test_weight_file_not_matching_config(tiny_demo, tmp_path, capsys):
    """A checkpoint of another model is refused in one line, before the config's model is built."""
    demo, opts = tiny_demo
    # the tiny test model has a 1-layer BERT; the config builds 12 layers. Tensors are stored as expanded views
    # of one element so the file stays small.
    state = {k: torch.zeros(1, dtype=v.dtype).expand(v.shape) for k, v in demo.model.state_dict().items()}
    state["rpn.head.not_a_layer.weight"] = torch.zeros(2)
    weight = tmp_path / "other_model.pth"
    torch.save({"model": state}, weight)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    code = demo_tool.main(["--config-file", GLIP_T, "--weight", str(weight), "--image", str(tmp_path / "a.png"),
                           "--caption", "a cat", "--output", str(tmp_path / "out"), "--device", "cpu",
                           *[str(o) for o in opts]])
    assert code == 2
    line = one_error_line(capsys)
    assert "other_model.pth does not fit the model of " + GLIP_T in line
    assert "are missing from the file (first: language_backbone.body.model.encoder.layer.1." in line
    assert "1 tensors are in the file but not in the model (first: rpn.head.not_a_layer.weight)" in line


def test_draw_detections_colours_and_sizes():
    from glip.utils.visualize import draw_detections, label_color

    image = np.zeros((50, 80, 3), np.uint8)
    drawn = np.asarray(draw_detections(image, [[10, 20, 60, 45]], [3], [0.87], ["traffic light"], line_width=1))
    assert drawn.shape == image.shape
    assert tuple(drawn[45, 30]) == label_color(3)  # bottom edge of the box
    assert tuple(drawn[44, 30]) == (0, 0, 0)  # inside stays untouched
    assert label_color(1) != label_color(2)
    with pytest.raises(ValueError, match="boxes"):
        draw_detections(image, [[0, 0, 1, 1]], [1, 2], [0.5], None)
