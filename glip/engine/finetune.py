"""The per-task loop of ``tools/finetune.py``: one fine-tuning run per (task config, shuffle seed).

For each run (``glip.utils.cli.finetune_runs``: config file + task file + opts, ``--custom_shot_and_epoch_and_
general_copy SHOT_EPOCH_COPY`` -> ``DATASETS.FEW_SHOT`` / ``SOLVER.MAX_EPOCH`` / ``DATASETS.GENERAL_COPY``,
``OUTPUT_DIR/ft_task_<i>[_seed_<s>]``, the ``SOLVER.TUNING_HIGHLEVEL_OVERRIDE`` expansion) this module:

1. checks a custom COCO task (categories present, caption within 256 tokens; ``glip.data.task_check``);
2. trains with the shared entry ``glip.engine.run.train`` under the config's freeze policy
   (``glip.modeling.freezing.policy_from_config``: the prompt offset trains even inside a frozen RPN), and
   its ``prepare_model`` hook applies the prompt-tuning transformation when the language backbone is frozen
   (``glip.engine.prompt_tuning.cache_language_backbone``). ``glip.engine.trainer.do_train`` evaluates on
   ``DATASETS.TEST`` (the task's ``val``) every checkpoint period when ``TEST.DURING_TRAINING`` or ``SOLVER.USE_AUTOSTEP``
   (``CHECKPOINT_PER_EPOCH`` sets that period in epochs), steps the plateau schedule with the result
   (``USE_AUTOSTEP``, ``STEP_PATIENCE``), keeps ``model_best.pth`` and stops after ``AUTO_TERMINATE_PATIENCE``
   evaluations without improvement;
3. unless ``--skip-test``: evaluates the final model on ``DATASETS.TEST`` (as the reference), or with
   ``--evaluate_only_best_on_test`` the best checkpoint on the registered ``test`` split (plus ``val`` with
   ``--push_both_val_and_test``), results under ``OUTPUT_DIR[/best]/inference/<split>``;
4. in a prompt-tuning mode (``ADD_LINEAR_LAYER``) writes ``OUTPUT_DIR/tuned_prompt.pth`` (the evaluation
   captions, their text features and the offset) for inference without the language backbone.

SHOT 10000 means "no fine-tuning": the pre-trained checkpoint is copied to ``model_best.pth``.
"""
import logging
import os
import shutil
from typing import Callable, Optional

import torch

from glip.engine.ema import unwrap_model
from glip.engine.prompt_tuning import cache_language_backbone
from glip.modeling.freezing import policy_from_config
from glip.utils.comm import is_main_process

logger = logging.getLogger("glip.engine.finetune")

NO_TRAINING_SHOT = 10000
PROMPT_FILE = "tuned_prompt.pth"


def prepare_model(cfg, model, cache_language: bool = True):
    """``run.train``'s hook for the transfer modes; returns the model to train.

    With a frozen language backbone (``linear_prob``, ``language_prompt_v2`` / ``v4``) and ``cache_language``
    this is :func:`glip.engine.prompt_tuning.cache_language_backbone` (the text features of each caption are
    computed once); otherwise the model is returned unchanged. ``cfg`` is accepted for the hook's signature.
    """
    if cache_language and unwrap_model(model).freeze_policy.freeze_language:
        model = cache_language_backbone(model)
    return model


def evaluate_splits(cfg, model, splits, distributed: bool = False, subdir: str = "") -> list:
    """Evaluate ``model`` on each registered split; results in ``OUTPUT_DIR[/<subdir>]/inference/<split>``."""
    from glip.engine.run import run_test

    output_dir = os.path.join(cfg.OUTPUT_DIR, subdir) if subdir else None
    return run_test(cfg, model, distributed, output_dir=output_dir, dataset_names=splits)


def load_best(cfg, model) -> str:
    """Load ``OUTPUT_DIR/model_best.pth`` (else ``model_final.pth``) into ``model``; returns the file used."""
    from glip.engine.checkpointer import load_checkpoint_file

    for name in ("model_best.pth", "model_final.pth"):
        path = os.path.join(cfg.OUTPUT_DIR, name)
        if os.path.exists(path):
            state = load_checkpoint_file(path)["model"]
            state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
            unwrap_model(model).load_state_dict(state)
            logger.info("Evaluating %s", path)
            return path
    raise FileNotFoundError("no model_best.pth or model_final.pth in {}".format(cfg.OUTPUT_DIR))


def save_task_prompt(cfg, model) -> Optional[str]:
    """Write ``OUTPUT_DIR/tuned_prompt.pth`` for the evaluation captions of ``DATASETS.TEST[0]``."""
    from glip.data.build import make_data_loader
    from glip.data.positive_map import create_queries_and_maps_from_dataset
    from glip.engine.prompt_tuning import save_prompt

    if not is_main_process() or not cfg.DATASETS.TEST:
        return None
    dataset = make_data_loader(cfg, is_train=False)[0].dataset
    queries, _ = create_queries_and_maps_from_dataset(dataset, cfg)
    path = os.path.join(cfg.OUTPUT_DIR, PROMPT_FILE)
    save_prompt(model, path, queries)
    return path


def finetune_task(run_spec, args, train_fn: Optional[Callable] = None, pretrained_language: bool = True):
    """Train (and test) one run of :func:`glip.utils.cli.finetune_runs`; returns the model (None for SHOT 10000).

    ``train_fn`` defaults to ``glip.engine.run.train`` (same keyword arguments).
    """
    from glip.config import try_to_find
    from glip.data.task_check import check_registered_tasks

    cfg = run_spec.cfg
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger.info("Training %s -> %s", run_spec.task_file, cfg.OUTPUT_DIR)
    if run_spec.custom_shot == NO_TRAINING_SHOT:
        if is_main_process():
            logger.info("SHOT %d: copying the pre-trained checkpoint as the best model", NO_TRAINING_SHOT)
            shutil.copy(try_to_find(cfg.MODEL.WEIGHT), os.path.join(cfg.OUTPUT_DIR, "model_best.pth"))
        return None
    check_registered_tasks(cfg)
    if train_fn is None:
        from glip.engine.run import train as train_fn
    if getattr(args, "skip_train", False):
        model = _zero_shot_model(cfg, pretrained_language)
    else:
        from glip.utils.cli import freeze_options_summary

        logger.info("\n%s", freeze_options_summary(cfg))
        model = train_fn(cfg, local_rank=args.local_rank, distributed=args.distributed,
                         skip_optimizer_resume=args.skip_optimizer_resume, freeze_policy=policy_from_config(cfg),
                         prepare_model=prepare_model, pretrained_language=pretrained_language)
        if cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER:
            save_task_prompt(cfg, model)
    if not args.skip_test:
        if getattr(args, "evaluate_only_best_on_test", False) and not getattr(args, "skip_train", False):
            load_best(cfg, model)
            splits = ["val", "test"] if getattr(args, "push_both_val_and_test", False) else ["test"]
            evaluate_splits(cfg, model, [s for s in splits if s in cfg.DATASETS.REGISTER], args.distributed,
                            subdir="best")
        else:
            evaluate_splits(cfg, model, list(cfg.DATASETS.TEST), args.distributed)
    if getattr(args, "keep_testing", False):
        evaluate_splits(cfg, model, ["test"], args.distributed)
    return model


def _zero_shot_model(cfg, pretrained_language: bool):
    """``--skip-train``: the model with ``MODEL.WEIGHT`` loaded (the reference returns before training)."""
    from glip.engine.checkpointer import Checkpointer
    from glip.engine.run import load_initial_weights
    from glip.modeling.detector import build_detection_model

    model = build_detection_model(cfg).to(torch.device(cfg.MODEL.DEVICE))
    load_initial_weights(cfg, model, Checkpointer(model, save_dir=cfg.OUTPUT_DIR), pretrained_language)
    return model


def run_finetune(cfg, args, train_fn: Optional[Callable] = None, pretrained_language: bool = True) -> list:
    """Every run of ``finetune.py`` in order (task files x shuffle seeds); returns the models."""
    from glip.utils import cli

    models = []
    for run_spec in cli.finetune_runs(cfg, args):
        logger.info("Loaded fine-tune configuration file %s", run_spec.task_file)
        os.makedirs(run_spec.cfg.OUTPUT_DIR, exist_ok=True)
        cli.save_config(run_spec.cfg, os.path.join(run_spec.cfg.OUTPUT_DIR, "config.yml"))
        models.append(finetune_task(run_spec, args, train_fn, pretrained_language))
    return models


__all__ = ["run_finetune", "finetune_task", "prepare_model", "evaluate_splits", "load_best", "save_task_prompt"]
