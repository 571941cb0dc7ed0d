"""Train GLIP from a config (pre-training, or training on the datasets the config names).

Usage (as the reference):
    python tools/train_net.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml --skip-test \
        MODEL.WEIGHT MODEL/swin_tiny_patch4_window7_224.pth SOLVER.IMS_PER_BATCH 2 OUTPUT_DIR OUTPUT

Several processes: ``torchrun --nproc_per_node N tools/train_net.py ...`` (gloo on CPU, nccl on GPU; multi-node
with the usual torchrun flags); ``SOLVER.IMS_PER_BATCH`` is the global batch.

``OUTPUT_DIR`` receives (from rank 0 only) ``log.txt``, ``config.yml`` and the checkpoints (``model_XXXXXXX.pth``
every ``SOLVER.CHECKPOINT_PERIOD`` iterations, ``model_final.pth``, ``last_checkpoint``). Running the same command
again after a stop resumes from ``last_checkpoint`` (see ``glip.engine.run``). Ctrl-C or SIGTERM ends the run after
the iteration in progress, with a checkpoint of it, and the exit status 128 + the signal number.

Before the model is built, the config, the datasets and the weight file (or the checkpoint to resume from) are
checked (``glip.engine.preflight``); a bad input ends the run with one line and exit code 2 (``--debug``:
traceback). ``MODEL.DEVICE cuda`` on a machine without CUDA trains on the CPU.
"""
import importlib.util
import logging
import os
import shutil
import sys

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils import cli  # noqa: E402
from glip.utils.errors import run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.train_net")


def main(cfg, args):
    """Seed (``SOLVER.SEED + local_rank``), train (``glip.engine.run.train``), test unless ``--skip-test``.

    Returns the exit code.
    """
    from glip.engine.run import run_test, seed_everything, train

    seed_everything(cfg.SOLVER.SEED + args.local_rank)
    model = train(cfg, local_rank=args.local_rank, distributed=args.distributed,
                  use_tensorboard=args.use_tensorboard)
    logger.info("Training done; checkpoints in %s", cfg.OUTPUT_DIR)
    if not args.skip_test and cfg.DATASETS.TEST:
        run_test(cfg, model, distributed=args.distributed)
    return 0


def preflight(cfg, args, evaluate: bool):
    """The cheap checks: training (and, with ``evaluate``, test) datasets, and the weights the run starts from
    (checked first when the command line names them)."""
    from glip.engine.preflight import check_datasets, check_start_weights

    weight_first = cli.names_weight(args.opts)
    if weight_first:
        check_start_weights(cfg, args.config_file or None)
    check_datasets(cfg, is_train=True)
    if evaluate:
        check_datasets(cfg, is_train=False)
    if not weight_first:
        check_start_weights(cfg, args.config_file or None)


def run(argv=None):
    """Parse the command line, merge the config, check the inputs, set up logging, then :func:`main`."""
    args = cli.parse_args("train_net", argv)
    cfg = cli.merge_config(cli.base_config(), args.config_file, args.opts)
    if args.override_output_dir:
        cfg.OUTPUT_DIR = args.override_output_dir
    cfg.freeze()
    evaluate = bool(cfg.DATASETS.TEST) and (not args.skip_test or cfg.TEST.DURING_TRAINING or cfg.SOLVER.USE_AUTOSTEP)
    preflight(cfg, args, evaluate)
    cli.init_distributed(args, cfg.MODEL.DEVICE)
    if args.disable_output_distributed and args.local_rank > 0:
        sys.stdout = open(os.devnull, "w")
    if cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    run_logger = cli.setup_run_logger(cfg.OUTPUT_DIR)
    run_logger.info(args)
    run_logger.info("Using %d processes", args.num_gpus)
    run_logger.info("Loaded configuration file %s", args.config_file)
    if args.config_file:
        with open(args.config_file, "r") as f:
            run_logger.info("\n%s", f.read())
    run_logger.info("Running with config:\n%s", cfg)
    config_path = os.path.join(cfg.OUTPUT_DIR, "config.yml")
    run_logger.info("Saving config into: %s", config_path)
    if args.save_original_config and args.config_file and cli.current_rank() == 0:
        shutil.copy(args.config_file, os.path.join(cfg.OUTPUT_DIR, "config_original.yml"))
    cli.save_config(cfg, config_path)
    from glip.engine.hooks import TrainingInterrupted

    try:
        code = main(cfg, args)
    except TrainingInterrupted as stop:  # SIGINT / SIGTERM: the trainer checkpointed and logged how to resume
        code = stop.exit_code
    cli.shutdown_distributed()
    return code


if __name__ == "__main__":
    sys.exit(run_tool(run))
