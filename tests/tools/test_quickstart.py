"""tools/quickstart.py: the seen/unseen AP50 split, the config it builds, the small model, and (slow) that a short
training on the generated shapes lifts the held-out AP50 well above the untrained model's."""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "quickstart.py"


@pytest.fixture(scope="module")
def quickstart():
    spec = importlib.util.spec_from_file_location("quickstart_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_ap50_split_by_seen_flag(tmp_path, quickstart):
    images = [{"id": i, "file_name": "{}.png".format(i), "width": 100, "height": 100} for i in (1, 2)]
    annotations = [
        {"id": 1, "image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 1, "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 2, "bbox": [50, 50, 40, 20], "category_id": 1, "area": 800, "iscrowd": 0},
        {"id": 3, "image_id": 2, "bbox": [5, 5, 20, 20], "category_id": 2, "area": 400, "iscrowd": 0},
    ]
    categories = [{"id": 1, "name": "red circle", "seen": True}, {"id": 2, "name": "red star", "seen": False}]
    gt = _write(tmp_path / "gt.json", {"images": images, "annotations": annotations, "categories": categories})
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9},  # exact
        {"image_id": 2, "category_id": 1, "bbox": [52, 50, 40, 20], "score": 0.8},  # IoU 38/42 > 0.5
        {"image_id": 2, "category_id": 2, "bbox": [60, 60, 20, 20], "score": 0.7},  # misses the red star
    ]
    metrics = quickstart.ap50_by_split(gt, _write(tmp_path / "dt.json", results))
    assert metrics["AP50_seen"] == pytest.approx(100.0)
    assert metrics["AP50_unseen"] == pytest.approx(0.0)
    assert metrics["AP50_all"] == pytest.approx(50.0)
    assert metrics["AP_seen"] < 100.0  # the shifted box is below IoU 0.95
    empty = quickstart.ap50_by_split(gt, _write(tmp_path / "none.json", []))
    assert empty["AP50_seen"] == empty["AP50_unseen"] == 0.0


def test_config_points_at_the_data_and_the_pretrained_minilm(tmp_path, quickstart):
    from transformers import BertConfig

    from glip.data.positive_map import load_tokenizer
    from glip.text.pretrained import CONFIG_FILES, packaged_folder, resolve_pretrained

    cfg = quickstart.build_config(str(quickstart.MINILM_CONFIG), str(tmp_path / "out"), str(tmp_path / "data"),
                                  ["SOLVER.MAX_ITER", "7"])
    register = cfg.DATASETS.REGISTER
    assert register.shapes_train.ann_file == str(tmp_path / "data/train/detection.json")
    assert register.shapes_flickr_train.ann_file == str(tmp_path / "data/train/grounding.json")
    assert register.shapes_test.img_dir == str(tmp_path / "data/test/images")
    assert cfg.OUTPUT_DIR == str(tmp_path / "out/train") and cfg.SOLVER.MAX_ITER == 7
    lang = cfg.MODEL.LANGUAGE_BACKBONE
    assert lang.MODEL_TYPE == "sentence-transformers/all-MiniLM-L6-v2"
    folder = resolve_pretrained(lang.MODEL_TYPE, CONFIG_FILES)  # offline (conftest): the pip package's folder
    assert folder == str(packaged_folder(lang.MODEL_TYPE))
    bert = BertConfig.from_pretrained(folder)
    assert bert.hidden_size == lang.LANG_DIM == 384 and bert.num_hidden_layers == 6
    assert lang.MAX_QUERY_LEN <= bert.max_position_embeddings
    assert bert.vocab_size == load_tokenizer(lang.TOKENIZER_TYPE).vocab_size == 30522
    assert quickstart.has_language_weights(lang.MODEL_TYPE)


def test_default_config_is_the_pretrained_minilm(quickstart):
    assert quickstart.DEFAULT_CONFIG == quickstart.MINILM_CONFIG
    assert quickstart.parse_args([]).config_file == str(quickstart.MINILM_CONFIG)


def test_scratch_config_keeps_the_small_random_bert(tmp_path, quickstart):
    from transformers import BertConfig

    from glip.data.positive_map import load_tokenizer

    cfg = quickstart.build_config(str(quickstart.SCRATCH_CONFIG), str(tmp_path / "out"), str(tmp_path / "data"))
    lang = cfg.MODEL.LANGUAGE_BACKBONE
    assert os.path.isabs(lang.MODEL_TYPE) and lang.TOKENIZER_TYPE == "bert-base-uncased"
    bert = BertConfig.from_pretrained(lang.MODEL_TYPE)
    assert bert.hidden_size == lang.LANG_DIM and bert.num_hidden_layers <= 2
    assert bert.vocab_size == load_tokenizer(lang.TOKENIZER_TYPE).vocab_size == 30522
    assert not (Path(lang.MODEL_TYPE) / "vocab.txt").exists()  # the vocabulary is the shipped bert-base one
    assert not quickstart.has_language_weights(lang.MODEL_TYPE)  # trained from random weights


def test_the_small_model_is_built_around_the_minilm(tmp_path, quickstart):
    from glip.modeling.detector import build_detection_model

    cfg = quickstart.build_config(str(quickstart.MINILM_CONFIG), str(tmp_path), str(tmp_path))
    model = build_detection_model(cfg)
    state = model.state_dict()
    assert state["language_backbone.body.model.embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert "language_backbone.body.model.encoder.layer.5.output.dense.weight" in state
    embed = cfg.MODEL.DYHEAD.FUSE_CONFIG.ATTN_EMBED_DIM
    assert state["rpn.head.dyhead_tower.0.b_attn.attn.l_proj.weight"].shape == (embed, 384)
    assert state["rpn.head.dyhead_tower.0.b_attn.attn.v_proj.weight"].shape == (embed, 64)
    # boxes are scored against the encoder's own token features: no text layer in the head's single block
    assert not cfg.MODEL.DYHEAD.FUSE_CONFIG.USE_FUSED_FEATURES_DOT_PRODUCT
    assert not any(k.startswith("rpn.head.dyhead_tower.1.") for k in state)
    assert state["rpn.head.dot_product_projection_text.weight"].shape[1] == 384
    assert cfg.MODEL.LANGUAGE_BACKBONE.FREEZE
    assert not any(p.requires_grad for p in model.language_backbone.parameters())
    assert state["backbone.body.patch_embed.proj.weight"].shape == (32, 3, 4, 4)
    assert not any(k.startswith("rpn.head.dyhead_tower.3.") for k in state)  # one fusion block


def test_plan_iterations_fits_the_budget(quickstart):
    # 5 min budget, 0.5 min spent, 0.5 min for evaluation: 4 min = 240 s left, at 0.4 s -> 600 iterations
    iterations, note = quickstart.plan_iterations(1000, 0.4, 5.0, 0.5, 0.5)
    assert iterations == 600
    assert "from 1000 to 600 iterations" in note and "0.40 s per iteration" in note
    assert quickstart.plan_iterations(1000, 0.4, 60.0, 0.5, 0.5) == (1000, "")  # fits: nothing cut, never more
    iterations, note = quickstart.plan_iterations(1000, 0.4, 1.0, 0.9, 0.5, min_iter=50)
    assert iterations == 50 and "do not fit" in note


def test_next_steps_are_commands_the_tools_accept(tmp_path, quickstart):
    import shlex

    spec = importlib.util.spec_from_file_location("demo_tool", REPO / "tools" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    from glip.utils import cli

    out = str(tmp_path / "qs")
    text = quickstart.next_steps(out, str(tmp_path / "img.png"), "a red triangle and a blue circle", 128)
    commands = [shlex.split(line.strip()) for line in text.splitlines() if line.startswith("  python ")]
    assert [c[1] for c in commands] == ["tools/demo.py", "tools/test_grounding_net.py"]
    args = demo.build_parser().parse_args(commands[0][2:])
    assert args.caption == "a red triangle and a blue circle" and args.min_image_size == 128
    assert args.config_file == os.path.join(out, "train", "config.yml")
    assert args.weight == os.path.join(out, "train", "model_final.pth")
    args = cli.build_parser("test_grounding_net").parse_args(commands[1][2:])
    assert args.weight == os.path.join(out, "train", "model_final.pth") and args.opts[0] == "OUTPUT_DIR"


def test_naming_split_by_seen_flag(tmp_path, quickstart):
    images = [{"id": 1, "file_name": "1.png", "width": 100, "height": 100}]
    annotations = [
        {"id": 1, "image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 1, "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 1, "bbox": [50, 50, 20, 20], "category_id": 2, "area": 400, "iscrowd": 0},
        {"id": 3, "image_id": 1, "bbox": [80, 5, 10, 10], "category_id": 2, "area": 100, "iscrowd": 0},
    ]
    categories = [{"id": 1, "name": "red circle", "seen": True}, {"id": 2, "name": "blue star", "seen": False},
                  {"id": 3, "name": "red star", "seen": True}]
    gt = _write(tmp_path / "gt.json", {"images": images, "annotations": annotations, "categories": categories})
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.6},  # the seen object: right
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.5},  # the unseen one: "red star"
        {"image_id": 1, "category_id": 3, "bbox": [51, 50, 20, 20], "score": 0.7},  # wins with the shape right
    ]
    naming = quickstart.naming_by_split(gt, _write(tmp_path / "dt.json", results))
    assert naming["seen"] == {"objects": 1, "right": 1, "wrong": 0, "missed": 0, "word_right": {}}
    assert naming["unseen"] == {"objects": 2, "right": 0, "wrong": 1, "missed": 1, "word_right": {1: 1}}
    lines = quickstart.format_naming(naming).splitlines()
    assert lines == ["seen objects named right: 1/1 (100%); wrong 0 (colour right 0, shape right 0), missed 0",
                     "unseen objects named right: 0/2 (0%); wrong 1 (colour right 0, shape right 1), missed 1"]



def test_drawing_at_the_demo_threshold(tmp_path, quickstart):
    images = [{"id": 1, "file_name": "1.png", "width": 100, "height": 100}]
    annotations = [
        {"id": 1, "image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 1, "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 1, "bbox": [50, 50, 20, 20], "category_id": 2, "area": 400, "iscrowd": 0},
    ]
    categories = [{"id": 1, "name": "red circle", "seen": True}, {"id": 2, "name": "blue star", "seen": False}]
    gt = _write(tmp_path / "gt.json", {"images": images, "annotations": annotations, "categories": categories})
    results = _write(tmp_path / "dt.json", [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.3},  # right, under 0.35
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.4},  # right, drawn
        {"image_id": 1, "category_id": 1, "bbox": [0, 80, 10, 10], "score": 0.5},  # drawn on the background
        {"image_id": 1, "category_id": 2, "bbox": [80, 0, 10, 10], "score": 0.2},  # background, not drawn
    ])
    drawing = quickstart.naming_by_split(gt, results, min_score=0.35)
    assert drawing["seen"]["right"] == 0 and drawing["seen"]["missed"] == 1
    assert drawing["unseen"]["right"] == 1 and drawing["boxes_without_object"] == 1
    assert quickstart.naming_by_split(gt, results, min_score=0.1)["boxes_without_object"] == 2
    assert "boxes_without_object" not in quickstart.naming_by_split(gt, results)
    assert quickstart.format_drawing(drawing, 0.35) == (
        "drawn at the demo threshold 0.35 over the held-out split: right name on 0 of 1 seen and 1 of 1 unseen "
        "objects, a wrong one on 0 and 0, not drawn 1 and 0; boxes without an object 1")

def test_unnamed_colours_reach_the_generated_data(tmp_path, quickstart):
    args = quickstart.parse_args(["--num-train", "6", "--num-test", "2", "--unnamed-colours", "black,pink",
                                  "--unnamed-shapes", "diamond", "--unnamed-prob", "0.5"])
    meta = quickstart.generate_data(args, str(tmp_path / "data"))
    assert meta["unnamed_colours"] == ["black", "pink"] and meta["unnamed_shapes"] == ["diamond"]
    assert meta["unnamed_prob"] == 0.5
    names = [c["name"] for c in json.loads(Path(meta["train"]["detection"]).read_text())["categories"]]
    assert names[12:] == ["circle", "square", "triangle", "star", "red shape", "green shape", "blue shape",
                          "yellow shape"]
    stamp = (tmp_path / "data" / "meta.json").stat().st_mtime_ns
    assert quickstart.generate_data(args, str(tmp_path / "data"))["unnamed_prob"] == 0.5
    assert (tmp_path / "data" / "meta.json").stat().st_mtime_ns == stamp  # the same arguments reuse the data
    none = ["--unnamed-colours", "", "--unnamed-shapes", ""]
    plain = quickstart.generate_data(quickstart.parse_args(["--num-train", "6", "--num-test", "2", *none]),
                                     str(tmp_path / "data"))
    with pytest.raises(ValueError, match="--unnamed-prob 0.5 needs unnamed colours or shapes"):
        quickstart.generate_data(quickstart.parse_args(["--unnamed-prob", "0.5", *none]), str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()
    assert plain["unnamed_colours"] == plain["unnamed_shapes"] == [] and "circle" not in [
        c["name"] for c in json.loads(Path(plain["train"]["detection"]).read_text())["categories"]]


def test_unnamed_objects_are_on_by_default_with_every_extra_colour_and_shape(quickstart):
    from glip.data.datasets.synthetic import UNNAMED_COLOURS, UNNAMED_SHAPES

    args = quickstart.parse_args([])
    assert args.unnamed_colours == ["black", "pink", "cyan", "purple", "orange", "brown"] == list(UNNAMED_COLOURS)
    assert args.unnamed_shapes == ["hexagon", "diamond", "cross"] == list(UNNAMED_SHAPES)
    assert args.unnamed_prob is None  # generate_data fills in DEFAULT_UNNAMED_PROB (0.3)


@pytest.mark.slow
def test_short_training_lifts_held_out_ap50_far_above_untrained(tmp_path, quickstart, capsys):
    from glip.modeling.detector import build_detection_model

    out = tmp_path / "run"
    argv = ["--output-dir", str(out), "--num-train", "300", "--num-test", "60", "--threads", "1",
            "--minutes", "60", "SOLVER.MAX_ITER", "300"]
    assert quickstart.run(argv) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("quickstart:")]
    assert len(line) == 1 and line[0].startswith("quickstart: AP50_seen=") and " minutes=" in line[0]
    results = json.loads((out / "results.json").read_text())
    assert results["iterations"] == 300 and results["cut"] == ""  # 300 iterations fit in 60 minutes
    trained = results["metrics"]
    assert (out / "demo.png").stat().st_size > 0
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "train").iterdir())

    cfg = quickstart.build_config(str(quickstart.DEFAULT_CONFIG), str(tmp_path / "untrained"),
                                  str(out / "data" / quickstart.DATA_SUBDIR))
    torch.manual_seed(cfg.SOLVER.SEED)
    model = build_detection_model(cfg)
    untrained = quickstart.evaluate_model(cfg, model, str(tmp_path / "untrained"),
                                          str(out / "data" / quickstart.DATA_SUBDIR / "test" / "detection.json"))
    # 300 iterations mostly teach where the shapes are (the names follow after ~1000); the untrained model's
    # boxes are random, so its AP50 is ~0.
    assert trained["AP50_all"] >= 2 * untrained["AP50_all"] + 5.0, (trained, untrained)
    assert trained["AP50_seen"] > untrained["AP50_seen"] and trained["AP50_unseen"] > untrained["AP50_unseen"]
