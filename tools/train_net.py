"""Train GLIP from a config (pre-training, or training on the datasets the config names).

Usage (as the reference):
    python tools/train_net.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml --skip-test \
        MODEL.WEIGHT MODEL/swin_tiny_patch4_window7_224.pth SOLVER.IMS_PER_BATCH 2 OUTPUT_DIR OUTPUT

``OUTPUT_DIR`` receives ``log.txt``, ``config.yml`` and the checkpoints (``model_final.pth``).
"""
import importlib.util
import logging
import os
import random
import shutil
import sys

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils import cli  # noqa: E402

ENGINE = "glip.engine.trainer"
logger = logging.getLogger("glip.tools.train_net")


def freeze_parts(cfg, model):
    """Turn off gradients of the parts the config freezes."""
    frozen = []
    if cfg.MODEL.BACKBONE.FREEZE:
        frozen.append(model.backbone.body)
    if cfg.MODEL.LANGUAGE_BACKBONE.FREEZE:
        frozen.append(model.language_backbone.body)
    if cfg.MODEL.FPN.FREEZE:
        frozen.append(model.backbone.fpn)
    if cfg.MODEL.RPN.FREEZE:
        frozen.append(model.rpn)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False


def train(cfg, local_rank, distributed, use_tensorboard=False):
    """Build model, data, optimiser and schedule from ``cfg`` and run the training loop."""
    import torch

    from glip.config import try_to_find
    from glip.data.build import make_data_loader
    from glip.engine.trainer import do_train
    from glip.modeling.detector import build_detection_model
    from glip.solver.build import make_lr_scheduler, make_optimizer
    from glip.utils.checkpoint import DetectronCheckpointer
    from glip.utils.comm import get_rank
    from glip.utils.metric_logger import MetricLogger, TensorboardLogger

    model = build_detection_model(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    model.to(device)
    if cfg.MODEL.BACKBONE.RESET_BN:
        for name, buf in model.named_buffers():
            if "running_mean" in name:
                torch.nn.init.constant_(buf, 0)
            if "running_var" in name:
                torch.nn.init.constant_(buf, 1)
    if cfg.SOLVER.GRAD_CLIP > 0:
        # As in the reference, only parameters that already hold a gradient get the clamp hook
        # (none, on a freshly built model); SOLVER.CLIP_GRADIENTS is the clipping that acts.
        clip_value = cfg.SOLVER.GRAD_CLIP
        for p in model.parameters():
            if p.grad is not None:
                p.register_hook(lambda grad: torch.clamp(grad, -clip_value, clip_value))

    data_loader = make_data_loader(cfg, is_train=True, is_distributed=distributed, start_iter=0)
    data_loaders_val = None
    if cfg.TEST.DURING_TRAINING or cfg.SOLVER.USE_AUTOSTEP:
        data_loaders_val = make_data_loader(cfg, is_train=False, is_distributed=distributed)[0]
    freeze_parts(cfg, model)

    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None,
            output_device=local_rank if device.type == "cuda" else None,
            broadcast_buffers=cfg.MODEL.BACKBONE.USE_BN,
            find_unused_parameters=cfg.SOLVER.FIND_UNUSED_PARAMETERS,
        )
    arguments = {"iteration": 0}
    checkpointer = DetectronCheckpointer(cfg, model, optimizer, scheduler, cfg.OUTPUT_DIR, get_rank() == 0)
    arguments.update(checkpointer.load(try_to_find(cfg.MODEL.WEIGHT)))
    if use_tensorboard:
        meters = TensorboardLogger(log_dir=cfg.OUTPUT_DIR, start_iter=arguments["iteration"], delimiter="  ")
    else:
        meters = MetricLogger(delimiter="  ")
    do_train(cfg, model, data_loader, optimizer, scheduler, checkpointer, device,
             cfg.SOLVER.CHECKPOINT_PERIOD, arguments, data_loaders_val, meters)
    return model


def main(cfg, args):
    """Seed, save the config, train. Returns the exit code."""
    if not cli.engine_available(ENGINE):
        return cli.report_missing_engine(logger, ENGINE, "training")
    import numpy as np
    import torch

    seed = cfg.SOLVER.SEED + args.local_rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    train(cfg, local_rank=args.local_rank, distributed=args.distributed, use_tensorboard=args.use_tensorboard)
    return 0


def run(argv=None):
    """Parse the command line, merge the config, set up logging, then :func:`main`."""
    args = cli.parse_args("train_net", argv)
    cli.init_distributed(args)
    if args.disable_output_distributed and args.local_rank > 0:
        sys.stdout = open(os.devnull, "w")
    cfg = cli.merge_config(cli.base_config(args), args.config_file, args.opts)
    if args.override_output_dir:
        cfg.OUTPUT_DIR = args.override_output_dir
    cfg.freeze()
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
    if args.save_original_config and args.config_file:
        shutil.copy(args.config_file, os.path.join(cfg.OUTPUT_DIR, "config_original.yml"))
    cli.save_config(cfg, config_path)
    return main(cfg, args)


if __name__ == "__main__":
    sys.exit(run())
