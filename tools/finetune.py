"""Transfer GLIP to downstream tasks: full fine-tuning, linear probing or prompt tuning.

Usage (as the reference):
    python tools/finetune.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml \
        --ft-tasks configs/odinw_13/pothole.yaml --skip-test \
        --custom_shot_and_epoch_and_general_copy 3_200_4 --evaluate_only_best_on_test --push_both_val_and_test \
        MODEL.WEIGHT MODEL/glip_tiny_model_o365_goldg.pth SOLVER.TUNING_HIGHLEVEL_OVERRIDE language_prompt_v2

Each task file (and each ``--shuffle_seeds`` seed) is one run in ``OUTPUT_DIR/ft_task_<i>[_seed_<s>]``.
"""
import importlib.util
import logging
import os
import shutil
import sys

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.config.tuning import freeze_options_summary  # noqa: E402
from glip.utils import cli  # noqa: E402

ENGINE = "glip.engine.trainer"
logger = logging.getLogger("glip.tools.finetune")

# Parameters of the heads that stay trainable under MODEL.LINEAR_PROB.
LINEAR_PROB_KEYS = ("bbox_pred", "cls_logits", "centerness", "cosine_scale", "dot_product_projection_text",
                    "head.log_scale", "head.bias_lang", "head.bias0")


def set_trainable(cfg, model):
    """Apply the freeze flags of a (possibly overridden) transfer mode to ``model``."""
    if cfg.MODEL.LINEAR_PROB:
        assert cfg.MODEL.BACKBONE.FREEZE, "For linear probing, backbone should be frozen!"
        if hasattr(model.backbone, "fpn"):
            assert cfg.MODEL.FPN.FREEZE, "For linear probing, FPN should be frozen!"
    frozen = []
    if cfg.MODEL.BACKBONE.FREEZE:
        frozen.append(model.backbone.body)
    if cfg.MODEL.FPN.FREEZE:
        frozen.append(model.backbone.fpn)
    if cfg.MODEL.RPN.FREEZE:
        frozen.append(model.rpn)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    heads = [getattr(model, "rpn", None), getattr(model, "roi_heads", None)]
    if cfg.MODEL.LINEAR_PROB:
        for head in heads:
            if head is None:
                continue
            for key, p in head.named_parameters():
                if not any(k in key for k in LINEAR_PROB_KEYS):
                    p.requires_grad = False
    if cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER and heads[0] is not None:
        for key, p in heads[0].named_parameters():
            if "tunable_linear" in key:
                p.requires_grad = True


def train(cfg, local_rank, distributed, zero_shot, skip_optimizer_resume=False):
    """Data, model, freezing, optimiser, checkpoint (resume or MODEL.WEIGHT), then the training loop."""
    import torch

    from glip.config import try_to_find
    from glip.data.build import make_data_loader
    from glip.modeling.detector import build_detection_model
    from glip.solver.build import make_lr_scheduler, make_optimizer
    from glip.utils.checkpoint import DetectronCheckpointer
    from glip.utils.comm import get_rank, is_main_process
    from glip.utils.metric_logger import MetricLogger

    data_loader = make_data_loader(cfg, is_train=True, is_distributed=distributed, start_iter=0)
    data_loaders_val = None
    if cfg.TEST.DURING_TRAINING:
        data_loaders_val = make_data_loader(cfg, is_train=False, is_distributed=distributed)[0]
    model = build_detection_model(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    model.to(device)
    set_trainable(cfg, model)

    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None,
            output_device=local_rank if device.type == "cuda" else None,
            broadcast_buffers=False, find_unused_parameters=cfg.SOLVER.FIND_UNUSED_PARAMETERS,
        )
    arguments = {"iteration": 0}
    checkpointer = DetectronCheckpointer(cfg, model, optimizer, scheduler, cfg.OUTPUT_DIR, get_rank() == 0)
    if checkpointer.has_checkpoint():
        arguments.update(checkpointer.load(skip_optimizer=skip_optimizer_resume))
    else:
        checkpointer._load_model(checkpointer._load_file(try_to_find(cfg.MODEL.WEIGHT)))
    if zero_shot:
        return model

    if is_main_process():
        for name, p in model.named_parameters():
            logger.info("%s : %s", name, "Not Frozen" if p.requires_grad else "Frozen")
    logger.info("\n%s", freeze_options_summary(cfg))
    period = cfg.SOLVER.CHECKPOINT_PERIOD
    if cfg.DATASETS.ALTERNATIVE_TRAINING:
        from glip.engine.alter_trainer import do_train as alternative_train

        alternative_train(model, data_loader, optimizer, scheduler, checkpointer, device, period, arguments)
    elif cfg.DATASETS.MULTISTAGE_TRAINING:
        from glip.engine.stage_trainer import do_train as multi_stage_train

        arguments["epoch_per_stage"] = cfg.SOLVER.MULTI_MAX_EPOCH
        multi_stage_train(model, data_loader, optimizer, scheduler, checkpointer, device, period, arguments)
    else:
        from glip.engine.trainer import do_train

        do_train(cfg, model, data_loader, optimizer, scheduler, checkpointer, device, period, arguments,
                 data_loaders_val, meters=MetricLogger(delimiter="  "))
    return model


def test(cfg, model, distributed, verbose=False):
    """Evaluate ``model`` on ``cfg.DATASETS.TEST``; results in ``OUTPUT_DIR/inference/<dataset>``."""
    from glip.data.build import make_data_loader
    from glip.engine.inference import inference
    from glip.utils.comm import synchronize

    if distributed:
        model = model.module
    log_dir = cfg.OUTPUT_DIR
    iou_types = ("bbox",) + (("segm",) if cfg.MODEL.MASK_ON else ()) + (("keypoints",) if cfg.MODEL.KEYPOINT_ON else ())
    dataset_names = list(cfg.DATASETS.TEST)
    if dataset_names and isinstance(dataset_names[0], (list, tuple)):
        dataset_names = [name for group in dataset_names for name in group]
    output_folders = [None] * len(dataset_names)
    if log_dir:
        for idx, name in enumerate(dataset_names):
            output_folders[idx] = os.path.join(log_dir, "inference", name)
            os.makedirs(output_folders[idx], exist_ok=True)
    data_loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed)
    output_folder = None
    for output_folder, name, data_loader in zip(output_folders, dataset_names, data_loaders):
        inference(
            model, data_loader, dataset_name=name, iou_types=iou_types,
            box_only=cfg.MODEL.RPN_ONLY and cfg.MODEL.RPN_ARCHITECTURE == "RPN",
            device=cfg.MODEL.DEVICE, expected_results=cfg.TEST.EXPECTED_RESULTS,
            expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL, output_folder=output_folder, cfg=cfg,
        )
        synchronize()
    if verbose and output_folder:
        with open(os.path.join(output_folder, "bbox.csv")) as f:
            logger.info("\n%s", f.read())


def main(cfg, args):
    """One training (and test) run per task config and shuffle seed. Returns the exit code."""
    if not cli.engine_available(ENGINE):
        return cli.report_missing_engine(logger, ENGINE, "training")
    from glip.config import try_to_find
    from glip.utils.comm import is_main_process

    for run_spec in cli.finetune_runs(cfg, args):
        run_cfg = run_spec.cfg
        os.makedirs(run_cfg.OUTPUT_DIR, exist_ok=True)
        logger.info("Loaded fine-tune configuration file %s", run_spec.task_file)
        with open(run_spec.task_file, "r") as f:
            logger.info("\n%s", f.read())
        config_path = os.path.join(run_cfg.OUTPUT_DIR, "config.yml")
        logger.info("Saving config into: %s", config_path)
        cli.save_config(run_cfg, config_path)
        logger.info("Training %s", run_spec.task_file)
        if run_spec.custom_shot == 10000:
            if is_main_process():
                logger.info("Copying pre-training checkpoint")
                shutil.copy(try_to_find(run_cfg.MODEL.WEIGHT), os.path.join(run_cfg.OUTPUT_DIR, "model_best.pth"))
            continue
        model = train(run_cfg, args.local_rank, args.distributed, args.skip_train,
                      skip_optimizer_resume=args.skip_optimizer_resume)
        if not args.skip_test:
            test(run_cfg, model, args.distributed)
        if args.keep_testing:
            keep_cfg = run_cfg.clone()
            keep_cfg.defrost()
            keep_cfg.DATASETS.TEST = ("test",)
            test(keep_cfg, model, args.distributed, verbose=True)
    return 0


def run(argv=None):
    """Parse the command line, merge config file and options, set up logging, then :func:`main`."""
    args = cli.parse_args("finetune", argv)
    cli.init_distributed(args)
    cfg = cli.merge_config(cli.base_config(args), args.config_file, args.opts)
    if cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    run_logger = cli.setup_run_logger(cfg.OUTPUT_DIR)
    run_logger.info("Using %d processes", args.num_gpus)
    run_logger.info(args)
    run_logger.info("Loaded configuration file %s", args.config_file)
    if args.config_file:
        with open(args.config_file, "r") as f:
            run_logger.info("\n%s", f.read())
    run_logger.info("Running with config:\n%s", cfg)
    config_path = os.path.join(cfg.OUTPUT_DIR, "config.yml")
    run_logger.info("Saving config into: %s", config_path)
    cli.save_config(cfg, config_path)
    return main(cfg, args)


if __name__ == "__main__":
    sys.exit(run())
