"""Evaluate a GLIP checkpoint: detection as grounding (COCO, LVIS, ODinW) or phrase grounding (Flickr30k).

Usage (as the reference):
    python tools/test_grounding_net.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml \
        --weight MODEL/glip_tiny_model_o365_goldg.pth [--task_config configs/odinw_13/pothole.yaml] \
        TEST.IMS_PER_BATCH 1 OUTPUT_DIR OUTPUT

Results go to ``OUTPUT_DIR/eval/<weight file stem>/inference/<dataset>/`` (``OUTPUT_DIR/inference/``
without ``--weight``); the log to ``log.txt`` in ``OUTPUT_DIR/eval/<stem>``.

Before the model is built, the config, the datasets of every task config and the weight file are checked
(``glip.engine.preflight``); a bad input ends the run with one line and exit code 2 (``--debug``: traceback).
``MODEL.DEVICE cuda`` on a machine without CUDA runs on the CPU.
"""
import importlib.util
import logging
import os
import sys

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils import cli  # noqa: E402
from glip.utils.errors import run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.test_grounding_net")


def eval_log_dir(cfg, weight):
    """``OUTPUT_DIR/eval/<weight stem>`` when ``--weight`` is given, else ``OUTPUT_DIR``."""
    if weight:
        return os.path.join(cfg.OUTPUT_DIR, "eval", os.path.splitext(os.path.basename(weight))[0])
    return cfg.OUTPUT_DIR


def iou_types_of(cfg):
    """Evaluation types implied by the heads that are on."""
    iou_types = ("bbox",)
    if cfg.MODEL.MASK_ON:
        iou_types += ("segm",)
    if cfg.MODEL.KEYPOINT_ON:
        iou_types += ("keypoints",)
    return iou_types


def format_results(results):
    """A text table: one line per dataset with the metrics of its ``EvalResult``."""
    lines = []
    for name, result in results.items():
        if result is None:
            continue
        cells = ", ".join("{}: {:.4f}".format(k, v) if isinstance(v, float) else "{}: {}".format(k, v)
                          for k, v in result.metrics.items())
        lines.append("{}: {}".format(name, cells))
    return "\n".join(lines)


def evaluate(model, cfg, log_dir, distributed):
    """Run inference + evaluation of ``model`` on every dataset of ``cfg.DATASETS.TEST``.

    Returns ``{dataset name: EvalResult}`` (results are None on ranks other than 0).
    """
    from glip.data.build import make_data_loader
    from glip.engine.inference import inference
    from glip.utils.comm import synchronize

    dataset_names = list(cfg.DATASETS.TEST)
    if dataset_names and isinstance(dataset_names[0], (list, tuple)):
        dataset_names = [name for group in dataset_names for name in group]
    results = {}
    if not log_dir:
        return results
    output_folders = []
    for name in dataset_names:
        folder = os.path.join(log_dir, "inference", name)
        os.makedirs(folder, exist_ok=True)
        output_folders.append(folder)
    data_loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed)
    box_only = cfg.MODEL.RPN_ONLY and (cfg.MODEL.RPN_ARCHITECTURE == "RPN" or cfg.DATASETS.CLASS_AGNOSTIC)
    for folder, name, data_loader in zip(output_folders, dataset_names, data_loaders):
        results[name] = inference(
            model,
            data_loader,
            dataset_name=name,
            iou_types=iou_types_of(cfg),
            box_only=box_only,
            device=cfg.MODEL.DEVICE,
            expected_results=cfg.TEST.EXPECTED_RESULTS,
            expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL,
            output_folder=folder,
            cfg=cfg,
        )
        synchronize()
    return results


def main(cfg, args):
    """Build the model, load the checkpoint, evaluate once per task config. Returns the exit code."""
    from glip.engine.preflight import resolve_weight
    from glip.engine.weights import load_weights
    from glip.modeling.detector import build_detection_model

    model = build_detection_model(cfg)
    model.to(cfg.MODEL.DEVICE)
    weight = args.weight or cfg.MODEL.WEIGHT
    if weight:
        load_weights(model, resolve_weight(weight))
    else:
        logger.warning("no --weight and no MODEL.WEIGHT: evaluating randomly initialised weights")
    log_dir = eval_log_dir(cfg, args.weight)
    all_results = {}
    task_paths = cli.split_task_configs(args.task_config)
    task_names = [os.path.splitext(os.path.basename(p))[0] for p in task_paths]
    several = len(task_paths) > 1
    for k, task_cfg in enumerate(cli.task_config_variants(cfg, ",".join(task_paths), args.opts)):
        # Several tasks (e.g. all ODinW datasets) would share `inference/test`: each gets its own folder.
        task_dir = os.path.join(log_dir, task_names[k]) if several and log_dir else log_dir
        for name, result in evaluate(model, task_cfg, task_dir, args.distributed).items():
            all_results["{}/{}".format(task_names[k], name) if task_names else name] = result
    if all_results:
        logger.info("Results:\n%s", format_results(all_results))
    if several and all_results and all(r is not None for r in all_results.values()):
        from glip.evaluation.odinw import summarize_tasks

        summarize_tasks(all_results)  # per-dataset AP and the mean over the tasks (the ODinW protocol)
    return 0


def preflight(cfg, args):
    """The cheap checks: every task config merges, its test datasets are usable, the weight fits the model (checked
    first when the command line names it)."""
    from glip.engine.preflight import check_datasets, check_weight

    weight_first = bool(args.weight) or cli.names_weight(args.opts)
    if weight_first:
        check_weight(cfg, args.weight or cfg.MODEL.WEIGHT, args.config_file or None)
    task_paths = cli.split_task_configs(args.task_config)
    for task_cfg in cli.task_config_variants(cfg, ",".join(task_paths), args.opts):
        check_datasets(task_cfg, is_train=False)
    if not weight_first:
        check_weight(cfg, cfg.MODEL.WEIGHT, args.config_file or None)


def run(argv=None):
    """Parse the command line, merge the config, check the inputs, set up logging, then :func:`main`."""
    args = cli.parse_args("test_grounding_net", argv)
    cfg = cli.merge_config(cli.base_config(), args.config_file, args.opts)
    cfg.freeze()
    preflight(cfg, args)
    cli.init_distributed(args, cfg.MODEL.DEVICE)
    log_dir = eval_log_dir(cfg, args.weight)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    run_logger = cli.setup_run_logger(log_dir)
    run_logger.info(args)
    run_logger.info("Using %d processes", args.num_gpus)
    run_logger.info("Running with config:\n%s", cfg)
    return main(cfg, args)


if __name__ == "__main__":
    sys.exit(run_tool(run))
