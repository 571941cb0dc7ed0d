"""Command lines of the tools (train_net, test_grounding_net, finetune) and their config merging.

The flags, their spelling and the order in which config sources are merged follow the
reference tools, so the official command lines work unchanged:

* every tool: ``--config-file FILE``, ``--local_rank N`` / ``--local-rank N`` (default: the
  ``LOCAL_RANK`` environment variable set by torchrun, else 0) and trailing ``KEY VALUE``
  pairs (``opts``) that override the config;
* ``test_grounding_net``: config file, then opts; each ``--task_config`` (comma separated)
  is merged into a copy, followed by the opts again;
* ``train_net``: config file, opts, then ``--override_output_dir``;
* ``finetune``: config file, opts; each ``--ft-tasks`` file (comma separated globs) is merged
  into a copy, followed by the opts, the ``--custom_shot_and_epoch_and_general_copy`` and
  ``--shuffle_seeds`` settings, the opts once more, then ``OUTPUT_DIR/ft_task_<i>[_seed_<s>]``
  and the ``SOLVER.TUNING_HIGHLEVEL_OVERRIDE`` expansion (:func:`apply_tuning_highlevel_override`).

Every merge ends by settling ``MODEL.DEVICE`` (``glip.utils.device.select_device``: ``cuda`` on a machine without
CUDA becomes ``cpu`` with one warning). Config errors are ``glip.utils.errors.ConfigError`` (one line naming the
key and the file or options); the tools print them through ``glip.utils.errors.run_tool``.

This module is the tools' edge: the only place below ``tools/`` that writes into a config.
"""
import argparse
import glob
import logging
import os
import sys
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

from glip.config import cfg as default_cfg
from glip.modeling.freezing import TUNING_MODES
from glip.utils.device import select_device
from glip.utils.errors import DEBUG_FLAG, ConfigFileNotFoundError, WeightFileNotFoundError
from glip.utils.logger import setup_logger

TOOLS = ("train_net", "test_grounding_net", "finetune")


def _default_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def build_parser(tool: str) -> argparse.ArgumentParser:
    """The ``argparse`` parser of ``tool`` (one of :data:`TOOLS`) with the reference's flags."""
    if tool not in TOOLS:
        raise ValueError("unknown tool {!r}; expected one of {}".format(tool, TOOLS))
    descriptions = {
        "train_net": "GLIP training (pre-training or single-task training)",
        "test_grounding_net": "GLIP evaluation: detection as grounding, or phrase grounding",
        "finetune": "GLIP transfer: fine-tune / prompt-tune on one or more task configs",
    }
    parser = argparse.ArgumentParser(description=descriptions[tool])
    parser.add_argument("--config-file", default="", metavar="FILE", type=str, help="path to the model config file")
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=_default_local_rank(),
                        help="rank within the node (torch.distributed.launch / torchrun; default: $LOCAL_RANK or 0)")
    if tool == "test_grounding_net":
        parser.add_argument("--weight", default=None, metavar="FILE",
                            help="checkpoint to evaluate (default: MODEL.WEIGHT)")
        parser.add_argument("--world-size", default=1, type=int, help="number of distributed processes")
        parser.add_argument("--dist-url", default="env://", help="URL used to set up distributed evaluation")
        parser.add_argument("--task_config", default=None,
                            help="comma-separated task configs merged over the model config, one evaluation each")
    if tool == "train_net":
        parser.add_argument("--skip-test", dest="skip_test", action="store_true", help="do not test the final model")
        parser.add_argument("--use-tensorboard", dest="use_tensorboard", action="store_true", default=False,
                            help="log metrics to TensorBoard")
        parser.add_argument("--save_original_config", action="store_true",
                            help="also copy the config file to OUTPUT_DIR/config_original.yml")
        parser.add_argument("--disable_output_distributed", action="store_true",
                            help="silence stdout on ranks other than 0")
        parser.add_argument("--override_output_dir", default=None, help="replace OUTPUT_DIR after all merges")
    if tool == "finetune":
        parser.add_argument("--ft-tasks", default="", metavar="FILE", type=str,
                            help="comma-separated task configs (globs allowed) to fine-tune on, one after another")
        parser.add_argument("--skip-train", dest="skip_train", action="store_true",
                            help="load the weights and evaluate without training (zero-shot)")
        parser.add_argument("--skip-test", dest="skip_test", action="store_true", help="do not test the final model")
        parser.add_argument("--skip_optimizer_resume", action="store_true",
                            help="when resuming from OUTPUT_DIR, do not restore optimizer / scheduler")
        parser.add_argument("--custom_shot_and_epoch_and_general_copy", default=None, type=str,
                            help="SHOT_EPOCH_COPY[_VALSHOT]: DATASETS.FEW_SHOT, SOLVER.MAX_EPOCH, "
                                 "DATASETS.GENERAL_COPY")
        parser.add_argument("--shuffle_seeds", default=None, type=str,
                            help="comma-separated DATASETS.SHUFFLE_SEED values, one run per seed")
        parser.add_argument("--evaluate_only_best_on_test", action="store_true",
                            help="accepted for compatibility with the reference's evaluation scripts")
        parser.add_argument("--push_both_val_and_test", action="store_true",
                            help="accepted for compatibility with the reference's evaluation scripts")
        parser.add_argument("--use_prepared_data", action="store_true",
                            help="use the pre-sampled few-shot splits <name>_<shot>_<seed> of the task config")
        parser.add_argument("--keep_testing", action="store_true", help="also evaluate on the registered 'test' split")
    add_debug_flag(parser)
    parser.add_argument("opts", help="config overrides as KEY VALUE pairs", default=None, nargs=argparse.REMAINDER)
    return parser


def add_debug_flag(parser: argparse.ArgumentParser):
    """``--debug``: show the traceback of an error (``glip.utils.errors.run_tool`` reads it; so does GLIP_DEBUG=1)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="on a bad input, also print the traceback (or set GLIP_DEBUG=1)")


def parse_args(tool: str, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) for ``tool``; adds ``num_gpus`` and ``distributed``.

    ``num_gpus`` is ``$WORLD_SIZE`` (1 when unset), as in the reference.
    """
    args = build_parser(tool).parse_args(argv)
    args.opts = list(args.opts or [])
    args.num_gpus = int(os.environ.get("WORLD_SIZE", 1))
    args.distributed = args.num_gpus > 1
    return args


def init_distributed(args: argparse.Namespace, device: Optional[str] = None) -> bool:
    """Join the process group when launched with several processes: nccl when the run's ``device`` (default:
    CUDA when available) is a GPU, gloo on CPU."""
    if not args.distributed:
        return False
    import datetime

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    backend = "gloo"
    on_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(args.local_rank)
        backend = "nccl"
    dist.init_process_group(backend=backend, init_method=getattr(args, "dist_url", "env://"),
                            timeout=datetime.timedelta(seconds=7200))
    return True


def shutdown_distributed():
    """Leave the process group (after a synchronising barrier) if this process joined one."""
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def base_config():
    """A mutable copy of the defaults. Nothing else is hung on it: the reference's ``cfg.local_rank`` /
    ``cfg.num_gpus`` travel as arguments (``args.local_rank``, ``args.num_gpus``)."""
    cfg = default_cfg.clone()
    cfg.defrost()
    return cfg


def merge_config(cfg, config_file: Optional[str] = None, opts: Sequence[str] = (),
                 task_config: Optional[str] = None):
    """Merge into ``cfg`` (in place): ``config_file``, ``opts``, then ``task_config`` and ``opts`` again.

    The second pass of ``opts`` makes command-line values win over the task config, as the
    reference tools do. Returns ``cfg``.
    """
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if task_config:
        cfg.merge_from_file(task_config)
        cfg.merge_from_list(list(opts))
    return settle_device(cfg)


def names_weight(opts: Sequence[str]) -> bool:
    """True when the trailing options set ``MODEL.WEIGHT`` (the tools check such an explicit input first)."""
    return "MODEL.WEIGHT" in list(opts)[0::2]


def settle_device(cfg):
    """``MODEL.DEVICE`` of ``cfg`` (mutable) replaced by the device this machine runs it on; returns ``cfg``."""
    cfg.MODEL.DEVICE = select_device(cfg.MODEL.DEVICE)
    return cfg


def split_task_configs(task_config: Optional[str]) -> List[str]:
    """``"a.yaml,b.yaml"`` -> ``["a.yaml", "b.yaml"]`` (empty entries dropped; glob patterns such as
    ``configs/odinw_13/*.yaml`` expanded in sorted order; a pattern matching nothing is an error)."""
    if not task_config:
        return []
    paths = []
    for entry in (e for e in task_config.split(",") if e):
        if any(ch in entry for ch in "*?["):
            matches = sorted(glob.glob(entry))
            if not matches:
                raise ConfigFileNotFoundError("--task_config pattern {!r} matches no file; check the path".format(
                    entry))
            paths.extend(matches)
        else:
            paths.append(entry)
    return paths


def task_config_variants(cfg, task_config: Optional[str], opts: Sequence[str]) -> Iterator:
    """``test_grounding_net``: one config per ``--task_config`` entry (``cfg`` itself if none).

    Each variant is a mutable copy (as in the reference; the data loader may update it).
    """
    paths = split_task_configs(task_config)
    if not paths:
        yield cfg
        return
    for path in paths:
        variant = cfg.clone()
        variant.defrost()
        variant.merge_from_file(path)
        variant.merge_from_list(list(opts))
        yield settle_device(variant)


@dataclass
class FinetuneRun:
    """One fine-tuning run of ``finetune.py``: which task file, seed and merged config."""

    task_id: int
    task_file: str
    shuffle_seed: Optional[int]
    custom_shot: Optional[int]
    cfg: object


def expand_ft_tasks(ft_tasks: str, config_file: str) -> List[str]:
    """``--ft-tasks`` (comma-separated globs, each sorted) -> files; the model config if empty."""
    if not ft_tasks:
        return [config_file]
    files = []
    for pattern in (p for p in ft_tasks.split(",") if p):
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise ConfigFileNotFoundError("--ft-tasks {!r} matches no file; check the path".format(pattern))
        files.extend(matches)
    return files


def finetune_runs(cfg, args: argparse.Namespace) -> Iterator[FinetuneRun]:
    """``finetune.py``: the merged, frozen config of every (task file, shuffle seed) pair.

    ``cfg`` must already hold config file + opts. ``OUTPUT_DIR`` of each run is
    ``<cfg.OUTPUT_DIR>/ft_task_<i>`` (``_seed_<s>`` appended with ``--shuffle_seeds``);
    ``MODEL.WEIGHT`` naming ``model_last_checkpoint.pth`` is resolved through the
    ``last_checkpoint`` file next to it.
    """
    seeds = [int(s) for s in args.shuffle_seeds.split(",")] if args.shuffle_seeds else [None]
    for task_id, task_file in enumerate(expand_ft_tasks(args.ft_tasks, args.config_file), 1):
        for seed in seeds:
            run_cfg = cfg.clone()
            run_cfg.defrost()
            run_cfg.merge_from_file(task_file)
            run_cfg.merge_from_list(args.opts)
            output_dir = "{}/ft_task_{}".format(cfg.OUTPUT_DIR, task_id)
            custom_shot = _apply_custom_shot(run_cfg, args)
            if seed is not None:
                run_cfg.DATASETS.SHUFFLE_SEED = seed
                output_dir = "{}_seed_{}".format(output_dir, seed)
            run_cfg.merge_from_list(args.opts)
            if "last_checkpoint" in run_cfg.MODEL.WEIGHT:
                pointer = run_cfg.MODEL.WEIGHT.replace("model_last_checkpoint.pth", "last_checkpoint")
                try:
                    with open(pointer, "r") as f:
                        last = f.read()
                except OSError as err:
                    raise WeightFileNotFoundError("MODEL.WEIGHT {} names the last checkpoint of a run, but {} cannot "
                                                  "be read ({}); give the checkpoint file itself".format(
                                                      run_cfg.MODEL.WEIGHT, pointer, err.strerror)) from err
                run_cfg.MODEL.WEIGHT = run_cfg.MODEL.WEIGHT.replace("model_last_checkpoint.pth", last)
            run_cfg.OUTPUT_DIR = output_dir
            apply_tuning_highlevel_override(run_cfg)
            settle_device(run_cfg)
            run_cfg.freeze()
            yield FinetuneRun(task_id, task_file, seed, custom_shot, run_cfg)


def _apply_custom_shot(cfg, args) -> Optional[int]:
    """Apply ``--custom_shot_and_epoch_and_general_copy SHOT_EPOCH_COPY[_VALSHOT]``; returns SHOT."""
    spec = args.custom_shot_and_epoch_and_general_copy
    if not spec:
        return None
    parts = spec.split("_")
    shot, epoch, copy = int(parts[0]), int(parts[1]), int(parts[2])
    cfg.SOLVER.MAX_EPOCH = epoch
    cfg.DATASETS.GENERAL_COPY = copy
    if not args.use_prepared_data:
        cfg.DATASETS.FEW_SHOT = shot
    elif shot != 0:
        val_shot = int(parts[3]) if len(parts) > 3 else shot
        cfg.DATASETS.TRAIN = ("{}_{}_{}".format(cfg.DATASETS.TRAIN[0], shot, cfg.DATASETS.SHUFFLE_SEED),)
        cfg.DATASETS.TEST = ("{}_{}_{}".format(cfg.DATASETS.TEST[0], val_shot, cfg.DATASETS.SHUFFLE_SEED),)
        if val_shot in (1, 3):
            cfg.DATASETS.GENERAL_COPY_TEST = 4
    return shot


def apply_tuning_highlevel_override(cfg):
    """Write the mode ``cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE`` (a :data:`glip.modeling.freezing.TUNING_MODES`
    policy) into the individual freeze flags of ``cfg`` (mutable), as the reference's ``finetune.py`` does.

    The model build reads only those flags (``policy_from_config``), and the run log reports them. ``None``
    or an unknown mode leaves ``cfg`` untouched (as the reference). ``linear_prob`` also turns off gradient
    checkpointing of the head. Returns ``cfg``.
    """
    mode = cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE
    if mode not in TUNING_MODES:
        return cfg
    policy = TUNING_MODES[mode]
    cfg.MODEL.BACKBONE.FREEZE = policy.freeze_backbone
    cfg.MODEL.FPN.FREEZE = policy.freeze_fpn
    cfg.MODEL.RPN.FREEZE = policy.freeze_rpn
    cfg.MODEL.LINEAR_PROB = policy.linear_prob
    cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER = policy.add_linear_layer
    cfg.MODEL.LANGUAGE_BACKBONE.FREEZE = policy.freeze_language
    if mode == "linear_prob":
        cfg.MODEL.DYHEAD.USE_CHECKPOINT = False
    return cfg


def freeze_options_summary(cfg) -> str:
    """One line per freeze-related option, for the run log (the reference's ``report_freeze_options``)."""
    return "\n".join([
        "Backbone Freeze: {}".format(cfg.MODEL.BACKBONE.FREEZE),
        "FPN Freeze: {}".format(cfg.MODEL.FPN.FREEZE),
        "RPN Freeze: {}".format(cfg.MODEL.RPN.FREEZE),
        "Linear Probe: {}".format(cfg.MODEL.LINEAR_PROB),
        "Language Freeze: {}".format(cfg.MODEL.LANGUAGE_BACKBONE.FREEZE),
        "Linear Layer (prompt tuning): {}".format(cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER),
        "High Level Override: {}".format(cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE),
    ])


def save_config(cfg, path: str):
    """Write ``cfg.dump()`` to ``path`` on the main process."""
    if current_rank() != 0:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(cfg.dump())


def setup_run_logger(save_dir: Optional[str]) -> logging.Logger:
    """The ``glip`` package logger: console + ``save_dir/log.txt`` on rank 0, silent elsewhere."""
    return setup_logger("glip", save_dir, current_rank())


def current_rank() -> int:
    """Global rank; 0 without importing torch when no process group can exist yet."""
    if "torch.distributed" not in sys.modules:
        return 0
    from glip.utils.comm import get_rank

    return get_rank()

