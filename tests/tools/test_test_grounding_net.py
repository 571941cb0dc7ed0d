"""tools/test_grounding_net.py end to end: the reference's output layout and files on a tiny GLIP and a generated
COCO dataset (default run), and the reference's own end-to-end golden on real photos with GLIP-T (slow)."""
import collections
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch
from helpers import REFERENCE
from helpers.tiny import TINY_BERT_OPTS
from PIL import Image

from glip.utils import cli

REPO = Path(__file__).resolve().parents[2]
GLIP_T = str(REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
E2E = REFERENCE / "end_to_end"

# The golden's command line (tests/fixtures/reference/end_to_end/README.md, section 1) after --weight / --task_config.
GOLDEN_OPTS = ("TEST.IMS_PER_BATCH 1 SOLVER.IMS_PER_BATCH 1 TEST.EVAL_TASK detection "
               "DATASETS.TRAIN_DATASETNAME_SUFFIX _grounding DATALOADER.DISTRIBUTE_CHUNK_AMONG_NODE False "
               "DATASETS.USE_OVERRIDE_CATEGORY True DATASETS.USE_CAPTION_PROMPT False MODEL.DEVICE cpu").split()
TINY_OPTS = ["MODEL.SWINT.EMBED_DIM", "32", "MODEL.SWINT.DEPTHS", "(1, 1, 1, 1)", "MODEL.SWINT.NUM_HEADS",
             "(1, 2, 4, 8)", "MODEL.SWINT.OUT_CHANNELS", "(32, 64, 128, 256)", "MODEL.DYHEAD.NUM_CONVS", "1",
             "MODEL.DYHEAD.USE_CHECKPOINT", "False", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
             "DATALOADER.NUM_WORKERS", "0"] + TINY_BERT_OPTS
TINY_SIZES = [(160, 120), (90, 200), (150, 110)]  # (width, height)


def load_tool():
    spec = importlib.util.spec_from_file_location("test_grounding_net_tool", REPO / "tools/test_grounding_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_official_checkpoint(model, path):
    """As the official files: `{"model": {"module." + key: tensor}}`."""
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}}, path)


def coco_ap(gt_file, results_file):
    """pycocotools' bbox stats of a results json against the gt json."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        gt.dataset.setdefault("info", {})
        evaluator = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def unmatched_detections(ours, golden, box_tol=0.05, score_tol=1e-4):
    """Golden detections without a distinct counterpart in ours (same image and category, xywh within box_tol,
    score within score_tol)."""
    by_image = collections.defaultdict(list)
    for det in ours:
        by_image[det["image_id"]].append(det)
    used, missing = set(), []
    for det in golden:
        match = next((id(o) for o in by_image[det["image_id"]]
                      if id(o) not in used and o["category_id"] == det["category_id"]
                      and max(abs(a - b) for a, b in zip(o["bbox"], det["bbox"])) <= box_tol
                      and abs(o["score"] - det["score"]) <= score_tol), None)
        if match is None:
            missing.append(det)
        else:
            used.add(match)
    return missing


# --- tiny model, generated dataset --------------------------------------------------------------------------------

def write_task(root: Path):
    """Generated images + COCO json under `root/data/tiny`, and a task config registering them as `test`."""
    gen = torch.Generator().manual_seed(0)
    images, annotations = [], []
    (root / "data/tiny/images").mkdir(parents=True)
    for i, (w, h) in enumerate(TINY_SIZES):
        pixels = torch.randint(0, 255, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels, "RGB").save(root / f"data/tiny/images/{i}.jpg")
        images.append({"id": 5 + i, "file_name": f"{i}.jpg", "width": w, "height": h})
        for k, cat in enumerate((2, 9)):
            box = [4.0 + 20 * k, 6.0 + 10 * k, w / 3, h / 3]
            annotations.append({"id": len(annotations) + 1, "image_id": 5 + i, "category_id": cat, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    categories = [{"id": 2, "name": "bicycle", "supercategory": "x"}, {"id": 9, "name": "boat", "supercategory": "x"}]
    gt_file = root / "data/tiny/ann.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    task = root / "tiny_task.yaml"
    task.write_text("DATASETS:\n  REGISTER:\n    test:\n      ann_file: tiny/ann.json\n      img_dir: tiny/images\n"
                    "  TEST: (\"test\",)\nTEST:\n  IMS_PER_BATCH: 2\nDATALOADER:\n  ASPECT_RATIO_GROUPING: false\n")
    return task, gt_file


def prepare_tiny_run(tmp_path, monkeypatch):
    """Generated data, a tiny GLIP saved as an official checkpoint `tiny_glip.pth`; returns (argv without
    OUTPUT_DIR, gt json)."""
    from helpers.glip_model import fill_model_

    from glip.modeling.detector import build_detection_model

    task, gt_file = write_task(tmp_path)
    monkeypatch.setenv("DATASET", str(tmp_path / "data"))
    opts = ["TEST.EVAL_TASK", "detection", "MODEL.DEVICE", "cpu"] + TINY_OPTS
    cfg = cli.merge_config(cli.base_config(), GLIP_T, opts)
    model = fill_model_(build_detection_model(cfg), salt="#tiny-tool")
    with torch.no_grad():  # confident enough that every image keeps detections
        model.rpn.head.bias0.fill_(0.0)
        model.rpn.head.log_scale.fill_(0.0)
    weight = tmp_path / "ckpt" / "tiny_glip.pth"
    weight.parent.mkdir()
    save_official_checkpoint(model, weight)
    return ["--config-file", GLIP_T, "--weight", str(weight), "--task_config", str(task)] + opts, gt_file


def test_tool_writes_the_reference_layout_on_a_tiny_model(tmp_path, monkeypatch):
    argv, gt_file = prepare_tiny_run(tmp_path, monkeypatch)
    out = tmp_path / "out"
    assert load_tool().run(argv + ["OUTPUT_DIR", str(out)]) == 0

    folder = out / "eval" / "tiny_glip" / "inference" / "test"
    assert {"bbox.json", "bbox.csv", "predictions.pth"} <= {p.name for p in folder.iterdir()}
    assert "tiny_task/test: bbox/AP: " in (out / "eval" / "tiny_glip" / "log.txt").read_text()

    # predictions.pth: one BoxList per image in network-input pixels; bbox.json: the same boxes in original pixels,
    # xywh with the legacy +1 width, json category ids.
    predictions = torch.load(folder / "predictions.pth", weights_only=False)
    results = json.loads((folder / "bbox.json").read_text())
    assert len(predictions) == len(TINY_SIZES) and sum(len(p) for p in predictions) == len(results) > 0
    by_image = collections.defaultdict(list)
    for det in results:
        by_image[det["image_id"]].append(det)
    for i, ((w, h), prediction) in enumerate(zip(TINY_SIZES, predictions)):
        net_w, net_h = prediction.size
        assert min(net_w, net_h) == 64 or max(net_w, net_h) == 128
        boxes = prediction.convert("xyxy").bbox.double()
        sx, sy = w / net_w, h / net_h
        x1, y1, x2, y2 = boxes[:, 0] * sx, boxes[:, 1] * sy, boxes[:, 2] * sx, boxes[:, 3] * sy
        expected = torch.stack([x1, y1, x2 - x1 + 1, y2 - y1 + 1], 1)
        dets = by_image[5 + i]
        assert len(dets) == len(prediction)
        torch.testing.assert_close(torch.tensor([d["bbox"] for d in dets], dtype=torch.float64), expected,
                                   atol=1e-3, rtol=0)
        labels = prediction.get_field("labels").tolist()
        assert [d["category_id"] for d in dets] == [{1: 2, 2: 9}[label] for label in labels]
        torch.testing.assert_close(torch.tensor([d["score"] for d in dets]), prediction.get_field("scores"))

    # bbox.csv: the AP row's average is pycocotools' AP on bbox.json.
    ap_row = (folder / "bbox.csv").read_text().splitlines()[1]
    assert float(ap_row.rstrip(", ").split(",")[-1]) == pytest.approx(coco_ap(gt_file, folder / "bbox.json")[0],
                                                                       abs=1e-9)


def test_several_task_configs_get_own_folders_and_a_mean(tmp_path, monkeypatch, caplog):
    """The ODinW way: a glob of task configs, one output folder per task, per-task AP and their mean."""
    import logging
    import shutil

    argv, gt_file = prepare_tiny_run(tmp_path, monkeypatch)
    first = Path(argv[argv.index("--task_config") + 1])
    shutil.copy(first, tmp_path / "tiny_task_b.yaml")
    argv[argv.index("--task_config") + 1] = str(tmp_path / "tiny_task*.yaml")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="glip.evaluation.odinw"):
        assert load_tool().run(argv + ["OUTPUT_DIR", str(out)]) == 0
    aps = []
    for task in ("tiny_task", "tiny_task_b"):
        folder = out / "eval" / "tiny_glip" / task / "inference" / "test"
        assert (folder / "bbox.json").is_file()
        aps.append(coco_ap(gt_file, folder / "bbox.json")[0])
    assert aps[0] == pytest.approx(aps[1])
    summary = caplog.text[caplog.text.index("ODinW summary"):]
    assert "tiny_task/test" in summary and "tiny_task_b/test" in summary
    mean_line = [line for line in summary.splitlines() if line.startswith("mean")][0]
    assert float(mean_line.split()[-1]) == pytest.approx(sum(aps) / 2, abs=1e-4)

LAUNCHER = """
import sys
import torch
torch.set_num_threads(1)
sys.argv[0] = {tool!r}
sys.path.insert(0, {repo!r})
import runpy
runpy.run_path({tool!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_single_process_results(tmp_path, monkeypatch):
    """`torchrun --nproc_per_node 2` (gloo on CPU): predictions gathered on rank 0, same bbox.json as 1 process."""
    import os
    import subprocess
    import sys

    argv, _ = prepare_tiny_run(tmp_path, monkeypatch)
    assert load_tool().run(argv + ["OUTPUT_DIR", str(tmp_path / "one")]) == 0
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(tool=str(REPO / "tools/test_grounding_net.py"), repo=str(REPO)))
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(launcher)] + argv + ["OUTPUT_DIR", str(tmp_path / "two")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = Path("eval/tiny_glip/inference/test")
    one = json.loads((tmp_path / "one" / folder / "bbox.json").read_text())
    two = json.loads((tmp_path / "two" / folder / "bbox.json").read_text())
    assert len(one) > 0 and len(two) == len(one)
    assert unmatched_detections(two, one, box_tol=1e-3, score_tol=1e-6) == []


# --- the reference's end-to-end golden ----------------------------------------------------------------------------

@pytest.mark.slow
def test_tool_reproduces_the_reference_evaluation_golden(tmp_path, monkeypatch):
    """GLIP-T filled with salt "#e2e-eval", the golden's exact command line: the same 100 detections per image and
    the same COCO AP as the reference's bbox.json; the same bbox.csv. (About 6 min on 2 busy cores.)"""
    from helpers.glip_model import fill_model_

    from glip.config import cfg as default_cfg
    from glip.modeling.detector import build_detection_model

    cfg = default_cfg.clone()
    cfg.merge_from_file(GLIP_T)
    model = fill_model_(build_detection_model(cfg), salt="#e2e-eval")
    weight = tmp_path / "glip_t_e2e_eval.pth"
    save_official_checkpoint(model, weight)
    del model

    monkeypatch.setenv("DATASET", str(E2E))
    out = tmp_path / "out"
    argv = ["--config-file", GLIP_T, "--weight", str(weight), "--task_config", str(E2E / "trees.yaml")] + \
        GOLDEN_OPTS + ["OUTPUT_DIR", str(out)]
    assert load_tool().run(argv) == 0

    folder = out / "eval" / "glip_t_e2e_eval" / "inference" / "test"
    ours = json.loads((folder / "bbox.json").read_text())
    golden = json.loads((E2E / "golden/bbox.json").read_text())
    assert collections.Counter(d["image_id"] for d in ours) == collections.Counter(d["image_id"] for d in golden)
    assert unmatched_detections(ours, golden) == []
    gt_file = E2E / "trees/annotations.json"
    assert list(coco_ap(gt_file, folder / "bbox.json")) == list(coco_ap(gt_file, E2E / "golden/bbox.json"))
    assert (folder / "bbox.csv").read_text() == (E2E / "golden/bbox.csv").read_text()
    assert (folder / "predictions.pth").exists()
