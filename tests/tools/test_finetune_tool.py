"""tools/finetune.py end to end: prompt tuning a tiny GLIP on a generated COCO set (validation during training,
best checkpoint on test, tuned prompt file), the no-training shot, task errors, and the reference's own
finetune.py command on a real photo for `full` and `language_prompt_v2` (end_to_end/README.md section 3, slow)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REFERENCE
from helpers.stochastic import no_dropout

REPO = Path(__file__).resolve().parents[2]
GLIP_T = REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml"
E2E = REFERENCE / "end_to_end"
TOOL = REPO / "tools/finetune.py"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The tiny model, data and launcher of the train_net tests (same set-up, one place).
train_net_tests = _load("train_net_tool_tests", Path(__file__).with_name("test_train_net.py"))

TASK = {"DATASETS": {"TRAIN": ["train"], "TEST": ["val"],
                     "REGISTER": {split: {"ann_file": "tiny/ann.json", "img_dir": "tiny/images"}
                                  for split in ("train", "val", "test")}}}


@pytest.fixture
def tiny_finetune(tmp_path, monkeypatch):
    """(run(argv) of finetune in this process, tmp dir) with a tiny GLIP (dropout off), its data, weights and a
    task file."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("DATASET", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    train_net_tests.write_tiny_dataset(tmp_path)
    config = train_net_tests.write_tiny_config(tmp_path / "tiny.yaml", {"SOLVER": {"MODEL_EMA": 0.0}})
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(TASK))
    train_net_tests.save_initial_checkpoint(config, tmp_path / "init.pth")
    with no_dropout():
        yield _load("finetune_tool", TOOL).run, tmp_path
    train_net_tests.release_log_file()


def _argv(*extra, spec="0_1_1", mode="language_prompt_v2"):
    return ["--config-file", "tiny.yaml", "--ft-tasks", "task.yaml", "--custom_shot_and_epoch_and_general_copy", spec,
            *extra, "MODEL.WEIGHT", "init.pth", "SOLVER.TUNING_HIGHLEVEL_OVERRIDE", mode, "TEST.EVAL_TASK",
            "detection", "OUTPUT_DIR", "out"]


def test_prompt_tuning_trains_only_the_offset_and_saves_the_prompt(tiny_finetune):
    run, root = tiny_finetune
    assert run(_argv("--skip-test")) == 0
    task_dir = root / "out/ft_task_1"
    saved = yaml.safe_load((task_dir / "config.yml").read_text())
    assert saved["SOLVER"]["MAX_EPOCH"] == 1 and saved["DATASETS"]["GENERAL_COPY"] == 1
    assert saved["MODEL"]["RPN"]["FREEZE"] and saved["MODEL"]["DYHEAD"]["FUSE_CONFIG"]["ADD_LINEAR_LAYER"]
    assert saved["MODEL"]["LANGUAGE_BACKBONE"]["FREEZE"] and saved["MODEL"]["BACKBONE"]["FREEZE"]

    final = torch.load(task_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 2  # 4 images x 1 epoch / 2 per batch
    initial = torch.load(root / "init.pth", map_location="cpu", weights_only=True)["model"]
    assert set(final["model"]) == {k[len("module."):] for k in initial} | {"rpn.tunable_linear.weight"}
    changed = [k for k, v in final["model"].items()
               if "module." + k not in initial or not torch.equal(v, initial["module." + k])]
    assert changed == ["rpn.tunable_linear.weight"]
    offset = final["model"]["rpn.tunable_linear.weight"]
    assert offset[:256].abs().sum() > 0 and offset[256:].abs().sum() == 0  # only the 256 text positions train

    prompt = torch.load(task_dir / "tuned_prompt.pth", map_location="cpu", weights_only=True)
    assert len(prompt["captions"]) == 1 and "cat" in prompt["captions"][0] and "dog" in prompt["captions"][0]
    torch.testing.assert_close(prompt["tunable_linear"], offset)
    assert prompt["language"]["hidden"].shape == (1, 256, 768)
    log = (root / "out/log.txt").read_text()
    assert "High Level Override: language_prompt_v2" in log and "1 parameter tensors train" in log


@pytest.mark.slow
def test_validation_during_training_keeps_the_best_and_tests_it(tiny_finetune):
    run, root = tiny_finetune
    assert run(_argv("--evaluate_only_best_on_test", "--push_both_val_and_test", "TEST.DURING_TRAINING", "True",
                     "SOLVER.CHECKPOINT_PER_EPOCH", "1.0", "SOLVER.AUTO_TERMINATE_PATIENCE", "5",
                     spec="0_2_1", mode="full")) == 0
    task_dir = root / "out/ft_task_1"
    final = torch.load(task_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 4  # validation after each epoch (iterations 2 and 4)
    best = torch.load(task_dir / "model_best.pth", map_location="cpu", weights_only=True)
    assert best["iteration"] in (2, 4) and "eval_result" in best
    for split in ("val", "test"):  # the best checkpoint on test, and on val too (push both)
        assert (task_dir / "best/inference" / split).is_dir()
    log = (root / "out/log.txt").read_text()
    assert log.count("Evaluating at iteration") == 2 and "Previous best" in log
    assert not (task_dir / "tuned_prompt.pth").exists()


def test_shot_10000_copies_the_pretrained_checkpoint(tiny_finetune):
    run, root = tiny_finetune
    argv = ["--config-file", "tiny.yaml", "--ft-tasks", "task.yaml", "--custom_shot_and_epoch_and_general_copy",
            "10000_1_1", "MODEL.WEIGHT", "init.pth", "OUTPUT_DIR", "out"]
    assert run(argv) == 0
    assert (root / "out/ft_task_1/model_best.pth").read_bytes() == (root / "init.pth").read_bytes()
    assert not (root / "out/ft_task_1/model_final.pth").exists()


def test_task_without_categories_fails_before_training(tiny_finetune):
    from glip.data.task_check import TaskConfigError

    run, root = tiny_finetune
    ann = json.loads((root / "tiny/ann.json").read_text())
    ann.pop("categories")
    (root / "tiny/bad.json").write_text(json.dumps(ann))
    task = json.loads(json.dumps(TASK))
    task["DATASETS"]["REGISTER"]["train"]["ann_file"] = "tiny/bad.json"
    (root / "bad_task.yaml").write_text(yaml.safe_dump(task))
    with pytest.raises(TaskConfigError, match="no 'categories'"):
        run(["--config-file", "tiny.yaml", "--ft-tasks", "bad_task.yaml", "MODEL.WEIGHT", "init.pth",
             "OUTPUT_DIR", "out"])
    assert not list((root / "out/ft_task_1").glob("*.pth"))


# --- end to end: the reference's finetune.py command on a real photo (section 3) ---------------------------------

SECTION_2_OPTIONS = [
    "MODEL.DEVICE", "cpu", "SOLVER.USE_AMP", "False", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.WARMUP_FACTOR", "0.1", "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.DURING_TRAINING", "False",
    "DATASETS.TRAIN_DATASETNAME_SUFFIX", "_grounding", "DATASETS.USE_OVERRIDE_CATEGORY", "True",
    "DATASETS.DISABLE_SHUFFLE", "True", "INPUT.MIN_SIZE_TRAIN", "320", "INPUT.MAX_SIZE_TRAIN", "512",
    "AUGMENT.MULT_MIN_SIZE_TRAIN", "()", "AUGMENT.FLIP_PROB_TRAIN", "0.0", "MODEL.SWINT.DROP_PATH_RATE", "0.0",
    "MODEL.FPN.DROP_BLOCK", "False",
]


@pytest.fixture(scope="module")
def e2e_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e") / "train.pth"
    train_net_tests.e2e_train_checkpoint(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "language_prompt_v2"])
def test_end_to_end_modes_train_the_reference_tensors(tmp_path, e2e_checkpoint, mode):
    golden = torch.load(E2E / "golden/finetune_modes.pt", map_location="cpu", weights_only=False)["modes"][mode]
    (tmp_path / "launch.py").write_text(train_net_tests.LAUNCHER)
    command = [sys.executable, str(tmp_path / "launch.py"), str(TOOL), "--config-file", str(GLIP_T),
               "--ft-tasks", str(E2E / "trees_train.yaml"), "--skip-test",
               "--custom_shot_and_epoch_and_general_copy", "0_2_1", "--evaluate_only_best_on_test",
               "--push_both_val_and_test", "MODEL.WEIGHT", str(e2e_checkpoint), *SECTION_2_OPTIONS,
               "SOLVER.MODEL_EMA", "0.0",  # not in the reference command: the EMA copy does not affect "model"
               "SOLVER.TUNING_HIGHLEVEL_OVERRIDE", mode, "OUTPUT_DIR", str(tmp_path / "out")]
    env = dict(os.environ, DATASET=str(E2E), PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    initial = torch.load(e2e_checkpoint, map_location="cpu", weights_only=True, mmap=True)["model"]
    final = torch.load(tmp_path / "out/ft_task_1/model_final.pth", map_location="cpu", weights_only=True, mmap=True)
    assert final["iteration"] == 2
    model = final["model"]
    new_keys = sorted(k for k in model if "module." + k not in initial)
    assert new_keys == sorted(golden["new_keys"])
    deltas = {}  # update norms of the tensors that changed
    for key in model:
        if key in new_keys or not model[key].is_floating_point():
            continue
        if model[key].shape != initial["module." + key].shape:  # cls_logits: 80 classes in the file, re-initialised
            continue
        if not torch.equal(model[key], initial["module." + key]):
            deltas[key] = (model[key].double() - initial["module." + key].double()).norm().item()
    skip = "attention.self.key.bias"  # exactly-zero true gradient: AdamW moves it by rounding noise only
    assert sorted(k for k in deltas if skip not in k) == sorted(k for k in golden["changed"] if skip not in k)
    for key, ref in golden["delta_norms"].items():
        if skip not in key:
            assert deltas[key] == pytest.approx(ref, rel=0.02), key
    for key, ref in golden["new_keys"].items():
        assert tuple(model[key].shape) == tuple(ref["shape"])
        rows = ref["rows_256"]
        ours = model[key][: rows.shape[0]].float()
        assert (ours - rows).norm() <= 0.02 * rows.norm(), key
        assert model[key][rows.shape[0]:].abs().sum() == 0
