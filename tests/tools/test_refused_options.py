"""A refused option stops every tool before any work, with an error naming the key and the value
(glip.config.audit, wired in glip.utils.cli)."""
import importlib.util
from pathlib import Path

import pytest

from glip.config.audit import RefusedOptionError

REPO = Path(__file__).resolve().parents[2]
GLIP_T = str(REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name + "_tool", REPO / "tools" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_grounding_net_refuses_an_option_on_the_command_line(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RefusedOptionError, match=r"MODEL.MASK_ON = True"):
        load_tool("test_grounding_net").run(["--config-file", GLIP_T, "OUTPUT_DIR", str(out), "MODEL.MASK_ON", "True"])
    assert not out.exists()  # nothing ran, not even the log


def test_test_grounding_net_refuses_an_option_of_a_task_config_before_building_the_model(tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("TEST:\n  SPECIAL_NMS: votes\n")
    out = tmp_path / "out"
    with pytest.raises(RefusedOptionError, match=r"TEST.SPECIAL_NMS = 'votes'"):
        load_tool("test_grounding_net").run(["--config-file", GLIP_T, "--task_config", str(task),
                                             "OUTPUT_DIR", str(out)])
    assert not out.exists()


def test_train_net_refuses_training_with_parallel_class_texts(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RefusedOptionError, match=r"GLIPKNOW.PARALLEL_LANGUAGE_INPUT = True"):
        load_tool("train_net").run(["--config-file", GLIP_T, "OUTPUT_DIR", str(out),
                                    "GLIPKNOW.PARALLEL_LANGUAGE_INPUT", "True"])
    assert not out.exists()


def test_finetune_refuses_an_option_of_any_task_before_the_first_run(tmp_path):
    ok, bad = tmp_path / "a_ok.yaml", tmp_path / "b_bad.yaml"
    ok.write_text("SOLVER:\n  MAX_EPOCH: 1\n")
    bad.write_text("DATASETS:\n  CLASS_CONCAT: True\n")
    out = tmp_path / "out"
    with pytest.raises(RefusedOptionError, match=r"DATASETS.CLASS_CONCAT = True"):
        load_tool("finetune").run(["--config-file", GLIP_T, "--ft-tasks", "{},{}".format(ok, bad),
                                   "OUTPUT_DIR", str(out)])
    assert not (out / "ft_task_1").exists()  # the valid first task did not start either
