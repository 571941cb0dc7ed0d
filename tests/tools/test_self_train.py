"""tools/self_train.py: scoring pseudo boxes against the withheld ones on hand-made rows, and (slow) the whole
loop on a tiny schedule through ``tools/quickstart.py --self-train``: every stage runs and the report has its
fields."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location("self_train_test_" + name, REPO / "tools" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def self_train():
    return _load("self_train")


def test_phrase_combination(self_train):
    colours, shapes = {"red", "blue"}, {"circle", "star"}
    assert self_train.phrase_combination("a small red circle", colours, shapes) == "red circle"
    assert self_train.phrase_combination("two blue stars", colours, shapes) == "blue star"
    assert self_train.phrase_combination("the left", colours, shapes) is None
    assert self_train.phrase_combination("a red and blue star", colours, shapes) is None


def test_pseudo_boxes_are_scored_by_phrase_and_overlap(tmp_path, self_train):
    withheld = {"images": [{"id": 1, "file_name": "000000.png"}, {"id": 2, "file_name": "000001.png"}],
                "categories": [{"id": 1, "name": "red circle", "seen": True},
                               {"id": 2, "name": "red star", "seen": False}],
                "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                                {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10]},
                                {"image_id": 2, "category_id": 2, "bbox": [0, 0, 20, 20]}]}
    (tmp_path / "withheld.json").write_text(json.dumps(withheld))
    caption = "a red circle to the left of a red star"  # "a red circle" [0, 12), "the left" [16, 24), "a red star"
    rows = [
        ("000000", {"caption": caption, "scores": [0.9, 0.8, 0.7, 0.6],
                    "bboxes": [[0, 0, 10, 10],     # red circle, exact: right
                               [20, 20, 30, 30],   # "a red circle" on the star: wrong name
                               [21, 20, 30, 30],   # red star, IoU 0.9: right
                               [0, 0, 10, 10]],    # "the left": names no combination
                    "tokens_positive": [[[0, 12]], [[0, 12]], [[28, 38]], [[16, 24]]]}),
        ("000001", {"caption": "a red star", "scores": [0.9, 0.5],
                    "bboxes": [[0, 0, 20, 9], [0, 0, 20, 20]],  # IoU 0.45 -> wrong; then the exact one: right
                    "tokens_positive": [[[0, 10]], [[0, 10]]]}),
    ]
    (tmp_path / "label.tsv").write_text("".join("{}\t{}\n".format(k, json.dumps(r)) for k, r in rows))
    quality = self_train.score_pseudo_labels(str(tmp_path / "label.tsv"), str(tmp_path / "withheld.json"))
    assert quality["pseudo_boxes"] == 6 and quality["withheld_boxes"] == 3
    assert quality["boxes_naming_no_combination"] == 1
    assert quality["precision"] == pytest.approx(100 * 3 / 6) and quality["recall"] == pytest.approx(100.0)
    assert quality["precision_seen"] == pytest.approx(50.0) and quality["precision_unseen"] == pytest.approx(100 * 2 / 3)
    assert quality["recall_seen"] == pytest.approx(100.0) and quality["recall_unseen"] == pytest.approx(100.0)


def test_bad_options_fail_with_one_line(tmp_path, capsys, self_train):
    from glip.utils.errors import run_tool

    cases = {"--num-captions must be >= 1": ["--num-captions", "0"],
             "--pseudo-threshold must be in [0, 1)": ["--pseudo-threshold", "1"],
             "config file not found": ["--config-file", str(tmp_path / "none.yaml")],
             "--minutes is a quickstart option": ["--minutes", "6"],
             "--demo-threshold is a quickstart option": ["--demo-threshold", "0.3"]}
    for expected, argv in cases.items():
        capsys.readouterr()
        code = run_tool(self_train.run, argv + ["--output-dir", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.strip().splitlines() == [err.strip()] and expected in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_loop_runs_every_stage_on_a_tiny_schedule(tmp_path, capsys):
    quickstart = _load("quickstart")
    out = tmp_path / "loop"
    argv = ["--self-train", "--output-dir", str(out), "--num-train", "12", "--num-test", "6", "--num-captions", "8",
            "--image-size", "64", "--threads", "1", "--pseudo-threshold", "0.0",
            "SOLVER.MAX_ITER", "6", "SOLVER.WARMUP_ITERS", "2", "INPUT.MIN_SIZE_TRAIN", "64", "INPUT.MAX_SIZE_TRAIN",
            "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "MODEL.ATSS.DETECTIONS_PER_IMG", "5",
            "MODEL.ATSS.INFERENCE_TH", "0.0"]
    assert quickstart.run(argv) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("self-train:")]
    assert len(line) == 1 and "teacher AP50_unseen=" in line[0] and "pseudo_recall=" in line[0]
    report = json.loads((out / "self_train.json").read_text())
    for stage in ("teacher", "student"):
        assert {"AP50_seen", "AP50_unseen", "AP50_all"} <= set(report[stage]["metrics"])
        assert report[stage]["iterations"] == 6
        assert (out / stage / "train" / "model_final.pth").is_file()
    assert report["student"]["train"] == report["teacher"]["train"] + ["shapes_pseudo"]
    assert report["pseudo_quality_as_trained"]["pseudo_boxes"] <= report["pseudo_quality"]["pseudo_boxes"]
    assert report["pseudo_summary"]["images"] == 8 and report["pseudo_summary"]["boxes_kept"] == 40
    quality = report["pseudo_quality"]
    assert quality["pseudo_boxes"] == 40 and quality["withheld_boxes"] >= 16
    assert 0.0 <= quality["precision"] <= 100.0 and 0.0 <= quality["recall_unseen"] <= 100.0
    log = (out / "log.txt").read_text()
    assert "shapes_pseudo_grounding has 8 data points (CaptionTSV)" in log
    # A second run reuses every stage.
    assert quickstart.run(argv) == 0
    assert json.loads((out / "self_train.json").read_text())["student"] == report["student"]
