"""Transfer GLIP to downstream tasks: full fine-tuning, linear probing or prompt tuning.

Usage (the reference's command line):
    python tools/finetune.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml \
        --ft-tasks configs/odinw_13/pothole.yaml --skip-test \
        --custom_shot_and_epoch_and_general_copy 3_200_4 --evaluate_only_best_on_test --push_both_val_and_test \
        MODEL.WEIGHT MODEL/glip_tiny_model_o365_goldg.pth SOLVER.TUNING_HIGHLEVEL_OVERRIDE language_prompt_v2

``--ft-tasks`` takes comma-separated task configs (globs allowed); each task file (and each ``--shuffle_seeds``
seed) is one run in ``OUTPUT_DIR/ft_task_<i>[_seed_<s>]``. ``SHOT_EPOCH_COPY``: N-shot sampling per class
(``DATASETS.FEW_SHOT``, 0 = all data; with ``--use_prepared_data`` the task's ``train_<N>_<seed>`` few-shot
file), epochs, dataset copies. ``SOLVER.TUNING_HIGHLEVEL_OVERRIDE``: full, linear_prob, language_prompt_v1..v4
(the policies: ``glip/modeling/freezing.py``). The per-run loop is ``glip.engine.finetune``.

Custom COCO-format dataset (one task file, e.g. ``mytask.yaml``)::

    DATASETS:
      REGISTER:
        train: {img_dir: mydata/train, ann_file: mydata/train/annotations.json}
        val:   {img_dir: mydata/valid, ann_file: mydata/valid/annotations.json}
        test:  {img_dir: mydata/test,  ann_file: mydata/test/annotations.json}
      TRAIN: ("train",)
      TEST: ("val",)
    MODEL: {ATSS: {NUM_CLASSES: <K+1>}, DYHEAD: {NUM_CLASSES: <K+1>}}

    python tools/finetune.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml --ft-tasks mytask.yaml \
        --custom_shot_and_epoch_and_general_copy 0_12_1 --evaluate_only_best_on_test --push_both_val_and_test \
        MODEL.WEIGHT MODEL/glip_tiny_model_o365_goldg.pth TEST.EVAL_TASK detection \
        DATASETS.TRAIN_DATASETNAME_SUFFIX _grounding TEST.DURING_TRAINING True SOLVER.CHECKPOINT_PER_EPOCH 1.0 \
        SOLVER.USE_AUTOSTEP True SOLVER.STEP_PATIENCE 3 SOLVER.AUTO_TERMINATE_PATIENCE 8 \
        SOLVER.TUNING_HIGHLEVEL_OVERRIDE full OUTPUT_DIR OUTPUT/mytask

Paths resolve under ``$DATASET`` (see DATA.md). The run stops at once with an error naming the fix when the
json has no categories, boxes use unknown category ids, or the caption of all class names exceeds 256 tokens
(the remedy is chunking: one task per group of classes, ``TEST.CHUNKED_EVALUATION`` for evaluation). Few-shot
files of a custom set: ``python -m glip.data.fewshot --ann-file mydata/train/annotations.json``. These checks,
and those of the weights and dataset files (``glip.engine.preflight``), run for every task before any model is
built; a bad input ends the run with one line and exit code 2 (``--debug``: traceback).

Ctrl-C or SIGTERM ends the run after the iteration in progress with a checkpoint of it (exit status 128 + the
signal number); the same command resumes it.
"""
import importlib.util
import logging
import os
import sys

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils import cli  # noqa: E402
from glip.utils.errors import run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.finetune")


def main(cfg, args) -> int:
    """All fine-tuning runs; returns the exit code."""
    from glip.engine.finetune import run_finetune

    run_finetune(cfg, args)
    return 0


def preflight(cfg, args):
    """The cheap checks of every run: its task config, datasets, category names and starting weights (checked
    first when the command line names them)."""
    from glip.data.task_check import check_registered_tasks
    from glip.engine.finetune import NO_TRAINING_SHOT
    from glip.engine.preflight import check_datasets, check_start_weights, check_weight

    config_name = args.config_file or None
    weight_first = cli.names_weight(args.opts)
    for run_spec in cli.finetune_runs(cfg, args):
        run_cfg = run_spec.cfg
        if run_spec.custom_shot == NO_TRAINING_SHOT:  # the pre-trained checkpoint is copied as the result
            check_weight(run_cfg, config_name=config_name)
            continue
        if weight_first:
            check_start_weights(run_cfg, config_name)
        check_datasets(run_cfg, is_train=True)
        check_registered_tasks(run_cfg)
        if run_cfg.DATASETS.TEST and (not args.skip_test or run_cfg.TEST.DURING_TRAINING
                                      or run_cfg.SOLVER.USE_AUTOSTEP):
            check_datasets(run_cfg, is_train=False)
        if not weight_first:
            check_start_weights(run_cfg, config_name)


def run(argv=None) -> int:
    """Parse the command line, merge config file and options, check the inputs, set up logging, then :func:`main`."""
    args = cli.parse_args("finetune", argv)
    cfg = cli.merge_config(cli.base_config(), args.config_file, args.opts)
    preflight(cfg, args)
    cli.init_distributed(args, cfg.MODEL.DEVICE)
    if cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    run_logger = cli.setup_run_logger(cfg.OUTPUT_DIR)
    run_logger.info("Using %d processes", args.num_gpus)
    run_logger.info(args)
    run_logger.info("Loaded configuration file %s", args.config_file)
    run_logger.info("Running with config:\n%s", cfg)
    cli.save_config(cfg, os.path.join(cfg.OUTPUT_DIR, "config.yml"))
    from glip.engine.hooks import TrainingInterrupted

    try:
        return main(cfg, args)
    except TrainingInterrupted as stop:  # SIGINT / SIGTERM: the trainer checkpointed and logged how to resume
        return stop.exit_code
    finally:
        if hasattr(cli, "shutdown_distributed"):
            cli.shutdown_distributed()


if __name__ == "__main__":
    sys.exit(run_tool(run))
