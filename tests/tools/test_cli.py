"""Command lines of tools/*.py: reference flags, local rank, config merge order, fine-tune runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import FIXTURES, REFERENCE

from glip.utils import cli

REPO = Path(__file__).resolve().parents[2]
GLIP_T = str(REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
E2E = REFERENCE / "end_to_end"
LVIS_MINIVAL = str(FIXTURES / "official_configs/lvis/minival.yaml")
POTHOLE = str(FIXTURES / "official_configs/odinw_13/pothole.yaml")

# Official flags of each reference tool (tools/*.py of microsoft/GLIP).
FLAGS = {
    "train_net": ["--config-file", "--local_rank", "--skip-test", "--use-tensorboard", "--save_original_config",
                  "--disable_output_distributed", "--override_output_dir"],
    "test_grounding_net": ["--config-file", "--weight", "--local_rank", "--world-size", "--dist-url",
                           "--task_config"],
    "finetune": ["--config-file", "--ft-tasks", "--local_rank", "--skip-train", "--skip-test",
                 "--skip_optimizer_resume", "--custom_shot_and_epoch_and_general_copy", "--shuffle_seeds",
                 "--evaluate_only_best_on_test", "--push_both_val_and_test", "--use_prepared_data",
                 "--keep_testing"],
}


def _run_tool(tool, args, cwd, env_extra=None):
    env = dict(os.environ)
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    env["PYTHONPATH"] = str(REPO)  # this checkout's glip, not an installed one
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(REPO / "tools" / (tool + ".py"))] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("tool", sorted(FLAGS))
def test_help_lists_the_official_flags(tool, tmp_path):
    result = _run_tool(tool, ["--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in FLAGS[tool] + ["--local-rank", "opts"]:
        assert flag in result.stdout, "{} missing from {} --help".format(flag, tool)


@pytest.mark.parametrize("tool", sorted(FLAGS))
@pytest.mark.parametrize("spelling", [["--local-rank=1"], ["--local_rank", "1"], ["--local-rank", "1"],
                                      ["--local_rank=1"]])
def test_local_rank_spellings(tool, spelling, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = cli.parse_args(tool, ["--config-file", GLIP_T] + spelling + ["MODEL.DEVICE", "cpu"])
    assert args.local_rank == 1
    assert args.opts == ["MODEL.DEVICE", "cpu"]


def test_local_rank_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    args = cli.parse_args("train_net", ["--config-file", GLIP_T])
    assert args.local_rank == 3 and args.num_gpus == 4 and args.distributed
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("WORLD_SIZE")
    args = cli.parse_args("train_net", [])
    assert args.local_rank == 0 and args.num_gpus == 1 and not args.distributed and args.opts == []


def test_official_evaluation_command_line_parses():
    argv = ["--config-file", GLIP_T, "--weight", "ckpt/eval.pth", "--task_config", "trees.yaml",
            "TEST.IMS_PER_BATCH", "1", "SOLVER.IMS_PER_BATCH", "1", "TEST.EVAL_TASK", "detection",
            "DATASETS.TRAIN_DATASETNAME_SUFFIX", "_grounding", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", "out"]
    args = cli.parse_args("test_grounding_net", argv)
    assert args.weight == "ckpt/eval.pth" and args.task_config == "trees.yaml"
    assert args.opts == argv[6:]


def test_official_finetune_command_line_parses():
    argv = ["--config-file", GLIP_T, "--ft-tasks", "trees_train.yaml", "--skip-test",
            "--custom_shot_and_epoch_and_general_copy", "0_2_1", "--evaluate_only_best_on_test",
            "--push_both_val_and_test", "MODEL.WEIGHT", "w.pth", "SOLVER.TUNING_HIGHLEVEL_OVERRIDE", "full"]
    args = cli.parse_args("finetune", argv)
    assert args.ft_tasks == "trees_train.yaml" and args.skip_test and not args.skip_train
    assert args.custom_shot_and_epoch_and_general_copy == "0_2_1"
    assert args.evaluate_only_best_on_test and args.push_both_val_and_test
    assert args.opts == ["MODEL.WEIGHT", "w.pth", "SOLVER.TUNING_HIGHLEVEL_OVERRIDE", "full"]


def test_train_net_command_line_parses():
    args = cli.parse_args("train_net", ["--config-file", GLIP_T, "--skip-test", "--override_output_dir", "o2",
                                        "SOLVER.MAX_EPOCH", "3", "AUGMENT.MULT_MIN_SIZE_TRAIN", "()"])
    assert args.skip_test and args.override_output_dir == "o2" and not args.use_tensorboard
    c = cli.merge_config(cli.base_config(), args.config_file, args.opts)
    assert c.SOLVER.MAX_EPOCH == 3 and c.AUGMENT.MULT_MIN_SIZE_TRAIN == ()
    assert "local_rank" not in c and "num_gpus" not in c  # no ad-hoc keys (the reference adds both)


def test_merge_order_file_then_options_then_task_then_options_again():
    opts = ["TEST.IMS_PER_BATCH", "1", "MODEL.DEVICE", "cpu"]
    c = cli.merge_config(cli.base_config(), GLIP_T, opts, task_config=LVIS_MINIVAL)
    assert c.MODEL.DYHEAD.NUM_CONVS == 6                      # model config
    assert c.DATASETS.TEST == ("lvis_evaluation_mini_val",)   # task config over model config
    assert c.MODEL.DYHEAD.NUM_CLASSES == 8                    # task config over defaults
    assert c.TEST.IMS_PER_BATCH == 1                          # options over task config (which says 8)
    assert c.MODEL.DEVICE == "cpu"


def test_each_task_config_gets_its_own_copy():
    opts = ["TEST.IMS_PER_BATCH", "2"]
    base = cli.merge_config(cli.base_config(), GLIP_T, opts)
    base.freeze()
    variants = list(cli.task_config_variants(base, LVIS_MINIVAL + "," + POTHOLE, opts))
    assert [v.DATASETS.TEST for v in variants] == [("lvis_evaluation_mini_val",), ("val",)]
    assert all(v.TEST.IMS_PER_BATCH == 2 for v in variants)
    assert "lvis_evaluation_val" not in variants[1].DATASETS.REGISTER
    assert base.DATASETS.TEST == ("coco_2017_val",)
    assert list(cli.task_config_variants(base, None, opts)) == [base]


def test_finetune_runs_follow_the_reference_sequence(tmp_path):
    argv = ["--config-file", GLIP_T, "--ft-tasks", str(E2E / "trees_train.yaml"), "--skip-test",
            "--custom_shot_and_epoch_and_general_copy", "0_2_1", "--shuffle_seeds", "3,30",
            "MODEL.WEIGHT", "w.pth", "SOLVER.TUNING_HIGHLEVEL_OVERRIDE", "language_prompt_v2",
            "DATASETS.GENERAL_COPY", "5", "OUTPUT_DIR", str(tmp_path / "out")]
    args = cli.parse_args("finetune", argv)
    base = cli.merge_config(cli.base_config(), args.config_file, args.opts)
    runs = list(cli.finetune_runs(base, args))
    assert [(r.task_id, r.shuffle_seed, r.custom_shot) for r in runs] == [(1, 3, 0), (1, 30, 0)]
    assert [r.cfg.OUTPUT_DIR for r in runs] == [str(tmp_path / "out") + "/ft_task_1_seed_3",
                                                str(tmp_path / "out") + "/ft_task_1_seed_30"]
    c = runs[0].cfg
    assert c.is_frozen()
    assert c.DATASETS.TRAIN == ("train",) and c.DATASETS.REGISTER.train.img_dir == "trees/images"
    assert c.SOLVER.MAX_EPOCH == 2 and c.DATASETS.FEW_SHOT == 0
    assert c.DATASETS.GENERAL_COPY == 5   # the options are merged again after the custom setting
    assert c.DATASETS.SHUFFLE_SEED == 3 and runs[1].cfg.DATASETS.SHUFFLE_SEED == 30
    assert c.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER and c.MODEL.BACKBONE.FREEZE and c.MODEL.RPN.FREEZE
    assert c.MODEL.WEIGHT == "w.pth"
    assert not base.MODEL.BACKBONE.FREEZE


def test_finetune_prepared_few_shot_splits_and_last_checkpoint(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000100.pth")
    weight = str(tmp_path / "model_last_checkpoint.pth")
    args = cli.parse_args("finetune", ["--config-file", GLIP_T, "--ft-tasks", POTHOLE, "--use_prepared_data",
                                       "--custom_shot_and_epoch_and_general_copy", "3_200_4",
                                       "MODEL.WEIGHT", weight])
    base = cli.merge_config(cli.base_config(), args.config_file, args.opts)
    (run,) = list(cli.finetune_runs(base, args))
    c = run.cfg
    assert c.DATASETS.TRAIN == ("train_3_0",) and c.DATASETS.TEST == ("val_3_0",)
    assert c.DATASETS.GENERAL_COPY_TEST == 4 and c.DATASETS.FEW_SHOT == 0
    assert c.SOLVER.MAX_EPOCH == 200 and c.DATASETS.GENERAL_COPY == 4
    assert c.MODEL.WEIGHT == str(tmp_path / "model_0000100.pth")
    assert c.OUTPUT_DIR == "OUTPUT/ft_task_1"


def test_ft_tasks_expand_comma_separated_globs_sorted():
    pattern = str(FIXTURES / "official_configs/odinw_13/P*.yaml") + "," + LVIS_MINIVAL
    files = cli.expand_ft_tasks(pattern, GLIP_T)
    assert [Path(f).name for f in files] == ["Packages_Raw.yaml", "PascalVOC.yaml", "minival.yaml"]
    assert cli.expand_ft_tasks("", GLIP_T) == [GLIP_T]


def test_save_config_round_trips(tmp_path):
    c = cli.merge_config(cli.base_config(), GLIP_T, ["MODEL.DEVICE", "cpu"])
    cli.save_config(c, str(tmp_path / "sub" / "config.yml"))
    reloaded = cli.base_config()
    reloaded.merge_from_file(str(tmp_path / "sub" / "config.yml"))
    assert yaml.safe_load(reloaded.dump()) == yaml.safe_load(c.dump())


# --- SOLVER.TUNING_HIGHLEVEL_OVERRIDE expansion into the individual freeze flags ---

# mode -> (backbone, fpn, rpn, linear_prob, add_linear_layer, language) frozen/on, from the reference tool.
TUNING_FLAGS = {
    "full": (False, False, False, False, False, False),
    "linear_prob": (True, True, False, True, False, True),
    "language_prompt_v1": (True, True, True, False, False, False),
    "language_prompt_v2": (True, True, True, False, True, True),
    "language_prompt_v3": (True, True, True, True, False, False),
    "language_prompt_v4": (True, True, True, True, True, True),
}


def _freeze_flags(c):
    return (c.MODEL.BACKBONE.FREEZE, c.MODEL.FPN.FREEZE, c.MODEL.RPN.FREEZE, c.MODEL.LINEAR_PROB,
            c.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER, c.MODEL.LANGUAGE_BACKBONE.FREEZE)


@pytest.mark.parametrize("mode", sorted(TUNING_FLAGS))
def test_tuning_mode_sets_the_freeze_flags(mode):
    c = cli.base_config()
    # Start from the opposite of every expected flag so each one must be written.
    c.MODEL.BACKBONE.FREEZE, c.MODEL.FPN.FREEZE, c.MODEL.RPN.FREEZE = [not f for f in TUNING_FLAGS[mode][:3]]
    c.MODEL.LINEAR_PROB = not TUNING_FLAGS[mode][3]
    c.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER = not TUNING_FLAGS[mode][4]
    c.MODEL.LANGUAGE_BACKBONE.FREEZE = not TUNING_FLAGS[mode][5]
    c.MODEL.DYHEAD.USE_CHECKPOINT = True
    c.merge_from_list(["SOLVER.TUNING_HIGHLEVEL_OVERRIDE", mode])
    assert cli.apply_tuning_highlevel_override(c) is c
    assert _freeze_flags(c) == TUNING_FLAGS[mode]
    assert c.MODEL.DYHEAD.USE_CHECKPOINT is (mode != "linear_prob")
    assert "High Level Override: {}".format(mode) in cli.freeze_options_summary(c)


def test_no_tuning_mode_leaves_config_untouched():
    c = cli.base_config()
    c.MODEL.BACKBONE.FREEZE = True
    before = c.dump()
    cli.apply_tuning_highlevel_override(c)
    assert c.dump() == before
