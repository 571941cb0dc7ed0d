"""One training run from a config: the shared entry of ``tools/train_net.py`` and ``tools/finetune.py``.

:func:`train` does what the reference's ``train()`` of both tools does, in this order:

1. build the model (``build_detection_model``), move it to ``MODEL.DEVICE``, reset BN statistics
   (``MODEL.BACKBONE.RESET_BN``), give it its freeze policy (``glip.modeling.freezing``; by default the config's
   flags as ``train_net.py`` applies them, finetune passes its own) and run the caller's ``prepare_model``
   hook (finetune: the prompt-tuning transformation);
2. the training loader with ``start_iter=0`` and the schedule length (``SOLVER.MAX_ITER``, or ``SOLVER.MAX_EPOCH``
   epochs of the loader's dataset: ``glip.data.build.train_iterations``), and the validation loader when
   ``TEST.DURING_TRAINING`` or ``SOLVER.USE_AUTOSTEP``;
3. optimizer and schedule (``make_optimizer`` / ``make_lr_scheduler`` over that length), then DDP when ``distributed``
   (``broadcast_buffers=MODEL.BACKBONE.USE_BN``, ``find_unused_parameters=SOLVER.FIND_UNUSED_PARAMETERS``);
4. weights: if ``OUTPUT_DIR/last_checkpoint`` exists the run resumes from it (model, optimizer, scheduler, EMA,
   scaler, RNG, iteration), else ``MODEL.WEIGHT`` is loaded (``glip.engine.weights.load_weights``: an official
   GLIP checkpoint as is, or a backbone-only file by suffix matching);
5. the training loader restarts at the resumed iteration; the tensorboard writer is made and
   ``glip.engine.trainer.do_train`` runs (EMA of ``SOLVER.MODEL_EMA`` from the weights loaded, hooks for
   logging, evaluation, checkpoints and a checkpointed stop on SIGINT / SIGTERM).

Pretrained BERT (decision): the reference builds BERT from the HuggingFace weights and lets ``MODEL.WEIGHT``
overwrite them. Here the model is built from the BERT config only; when the run does not resume and
``MODEL.WEIGHT`` is not a full GLIP checkpoint (a Swin ImageNet file, or no file), the HF ``bert-base-uncased``
weights are loaded into ``language_backbone.body.model`` from a local folder or the local HF cache (or the hub
when online). When they cannot be found the run stops with an error, unless ``pretrained_language=False``
(random BERT, e.g. tiny test models) is passed.
"""
import logging
import os
import random
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

import torch

from glip.engine.ema import unwrap_model
from glip.modeling.freezing import FreezePolicy, train_net_policy
from glip.utils.comm import get_rank, is_main_process, synchronize

if TYPE_CHECKING:
    from glip.evaluation import EvalResult

logger = logging.getLogger("glip.engine.run")


def seed_everything(seed: int):
    """Seed torch, numpy and python ``random`` (the tools pass ``SOLVER.SEED + local_rank``, as the reference)."""
    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def reset_bn_statistics(model: torch.nn.Module):
    """``MODEL.BACKBONE.RESET_BN``: running means to 0 and running variances to 1."""
    for name, buf in model.named_buffers():
        if "running_mean" in name:
            torch.nn.init.constant_(buf, 0)
        if "running_var" in name:
            torch.nn.init.constant_(buf, 1)


def wrap_distributed(cfg, model: torch.nn.Module, local_rank: int, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel as the reference sets it up (device ids only on GPU; gloo on CPU)."""
    on_gpu = device.type == "cuda"
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[local_rank] if on_gpu else None, output_device=local_rank if on_gpu else None,
        broadcast_buffers=cfg.MODEL.BACKBONE.USE_BN, find_unused_parameters=cfg.SOLVER.FIND_UNUSED_PARAMETERS)


def load_pretrained_language(model: torch.nn.Module, name_or_path: str):
    """Copy the HuggingFace BERT weights of ``name_or_path`` into ``model.language_backbone.body.model``.

    Raises FileNotFoundError when no weights can be found (offline and not in the local cache).
    """
    from transformers import BertModel

    from glip.text.pretrained import WEIGHT_FILES, resolve_pretrained

    source = resolve_pretrained(name_or_path, WEIGHT_FILES, what="BERT weights")
    bert = unwrap_model(model).language_backbone.body.model
    pretrained = BertModel.from_pretrained(source, add_pooling_layer=False)
    result = bert.load_state_dict(pretrained.state_dict(), strict=False)
    logger.info("Loaded pretrained %s into the language backbone (missing %s, unexpected %s)", name_or_path,
                list(result.missing_keys), list(result.unexpected_keys))


def _needs_pretrained_language(report: Optional[dict]) -> bool:
    """True when nothing (``report`` None) or only a partial file (suffix matching) gave the BERT weights."""
    if report is None:
        return True
    return any(key.startswith("language_backbone.") for key in report.get("unmatched", ()))


def load_initial_weights(cfg, model, checkpointer, pretrained_language=True, skip_optimizer: bool = False) -> dict:
    """Resume from ``OUTPUT_DIR/last_checkpoint`` if present, else load ``MODEL.WEIGHT`` (see module docstring).

    Returns the extra checkpoint data (``iteration``, ...; empty when not resuming).
    """
    from glip.config import try_to_find
    from glip.engine.weights import load_weights

    if checkpointer.has_checkpoint():
        return checkpointer.load(resume=True, skip_optimizer=skip_optimizer)
    report = None
    if cfg.MODEL.WEIGHT:
        path = try_to_find(cfg.MODEL.WEIGHT)
        logger.info("Loading weights from %s", path)
        report = load_weights(unwrap_model(model), path)
    if pretrained_language and _needs_pretrained_language(report):
        load_pretrained_language(model, cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE)
    elif _needs_pretrained_language(report):
        logger.warning("The language backbone keeps its random initialisation (pretrained_language=False)")
    return {}


def restart_loader_at(data_loader, iteration: int):
    """Make an iteration-based training loader start at ``iteration`` (after a resume)."""
    batch_sampler = getattr(data_loader, "batch_sampler", None)
    if not hasattr(batch_sampler, "start_iter"):
        raise TypeError("the training loader has no iteration-based batch sampler; cannot resume at {}"
                        .format(iteration))
    batch_sampler.start_iter = iteration


def eval_score(result: Optional["EvalResult"]) -> float:
    """The number a validation ``EvalResult`` is monitored by: its primary metric (COCO ``bbox/AP``, LVIS ``AP``,
    Flickr30k ``Recall@1_all``); 0.0 for no result (ranks other than 0)."""
    return 0.0 if result is None else result.score


def make_val_fn(cfg, data_loader_val, device) -> Optional[Callable]:
    """``val_fn(model, iteration) -> score`` running ``glip.engine.inference.inference`` on ``data_loader_val``;
    None when there is no loader. The score (rank 0; 0.0 elsewhere) is :func:`eval_score` of the ``EvalResult``."""
    if data_loader_val is None:
        return None
    from glip.engine.inference import inference

    def val_fn(model, iteration):
        result = inference(unwrap_model(model), data_loader_val, dataset_name="val", device=device,
                           expected_results=cfg.TEST.EXPECTED_RESULTS,
                           expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL, output_folder=None,
                           cfg=cfg, verbose=False)
        synchronize()
        return eval_score(result) if is_main_process() else 0.0

    return val_fn


def make_tensorboard_writer(log_dir: str):
    """A ``SummaryWriter`` on ``log_dir`` on rank 0; None elsewhere."""
    if not is_main_process():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=log_dir)


def build_model_on_device(cfg) -> Tuple[torch.nn.Module, torch.device]:
    """The model ``cfg`` describes on ``MODEL.DEVICE``, its BN statistics reset with ``MODEL.BACKBONE.RESET_BN``."""
    from glip.modeling.detector import build_detection_model

    model = build_detection_model(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    model.to(device)
    if cfg.MODEL.BACKBONE.RESET_BN:
        reset_bn_statistics(model)
    return model, device


def validation_loader(cfg, distributed: bool):
    """The loader of ``DATASETS.TEST[0]`` when ``TEST.DURING_TRAINING`` or ``SOLVER.USE_AUTOSTEP``, else None."""
    from glip.data.build import make_data_loader

    if not (cfg.TEST.DURING_TRAINING or cfg.SOLVER.USE_AUTOSTEP):
        return None
    return make_data_loader(cfg, is_train=False, is_distributed=distributed)[0]


def prepare_for_training(cfg, model, freeze_policy: Optional[FreezePolicy] = None,
                         prepare_model: Optional[Callable] = None):
    """Give ``model`` its freeze policy (default ``train_net_policy(cfg)``), then ``prepare_model(cfg, model)``."""
    trainable = model.set_freeze_policy(train_net_policy(cfg) if freeze_policy is None else freeze_policy)
    logger.info("%d parameter tensors train, %d are frozen", len(trainable),
                sum(1 for _ in model.parameters()) - len(trainable))
    return model if prepare_model is None else prepare_model(cfg, model)


def resume_or_load(cfg, model, checkpointer, data_loader, pretrained_language: bool = True,
                   skip_optimizer: bool = False) -> dict:
    """The ``arguments`` of the run (``iteration``, ...): resumed from ``OUTPUT_DIR/last_checkpoint``, the training
    loader restarted there, or ``{"iteration": 0}`` with the initial weights loaded (:func:`load_initial_weights`).
    EMA and scaler states of a resume stay in ``arguments`` for the trainer to restore."""
    arguments = {"iteration": 0}
    arguments.update(load_initial_weights(cfg, model, checkpointer, pretrained_language, skip_optimizer))
    if arguments["iteration"] > 0:
        logger.info("Resuming training at iteration %d", arguments["iteration"])
        restart_loader_at(data_loader, arguments["iteration"])
    return arguments


def train(cfg, local_rank: int = 0, distributed: bool = False, use_tensorboard: bool = False,
          skip_optimizer_resume: bool = False, prepare_model: Optional[Callable] = None,
          pretrained_language: bool = True, val_fn: Optional[Callable] = None,
          freeze_policy: Optional[FreezePolicy] = None):
    """Train the model ``cfg`` describes and return it (DDP-wrapped when ``distributed``).

    ``cfg``: the merged config (frozen or not; it is not modified).
    ``local_rank``: GPU index of this process (ignored on CPU). ``distributed``: the process group is already
    initialised (``glip.utils.cli.init_distributed``). ``use_tensorboard``: scalars to ``OUTPUT_DIR`` (rank 0).
    ``skip_optimizer_resume``: on resume, restore the weights but not optimizer / scheduler.
    ``freeze_policy``: which parameters train (default ``train_net_policy(cfg)``); set on the model before the
    optimizer is built. ``prepare_model(cfg, model) -> model``: then transforms the unwrapped model (finetune:
    the language cache of prompt tuning). ``pretrained_language``: see the module docstring.
    ``val_fn(model, iteration) -> float``: evaluation during training; default: inference on the validation
    loader when ``TEST.DURING_TRAINING`` or ``SOLVER.USE_AUTOSTEP``.
    Only rank 0 writes checkpoints (``OUTPUT_DIR/model_XXXXXXX.pth``, ``model_final.pth``, ``last_checkpoint``).
    SIGINT / SIGTERM end the run after the iteration in progress with a checkpoint
    (``glip.engine.hooks.TrainingInterrupted``).
    """
    from glip.data.build import make_data_loader, train_iterations
    from glip.engine.checkpointer import Checkpointer
    from glip.engine.trainer import do_train, train_options
    from glip.solver.build import make_lr_scheduler, make_optimizer

    model, device = build_model_on_device(cfg)
    if cfg.SOLVER.GRAD_CLIP > 0:
        logger.warning("SOLVER.GRAD_CLIP has no effect (as in the reference); use SOLVER.CLIP_GRADIENTS")
    data_loader = make_data_loader(cfg, is_train=True, is_distributed=distributed, start_iter=0)
    options = train_options(cfg, max_iter=train_iterations(cfg, len(data_loader.dataset)))
    if val_fn is None:
        val_fn = make_val_fn(cfg, validation_loader(cfg, distributed), device)
    model = prepare_for_training(cfg, model, freeze_policy, prepare_model)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer, max_iter=options.max_iter)
    if distributed:
        model = wrap_distributed(cfg, model, local_rank, device)
    checkpointer = Checkpointer(model, optimizer, scheduler, cfg.OUTPUT_DIR, save_to_disk=get_rank() == 0)
    arguments = resume_or_load(cfg, model, checkpointer, data_loader, pretrained_language, skip_optimizer_resume)
    tb_writer = make_tensorboard_writer(cfg.OUTPUT_DIR) if use_tensorboard else None
    try:
        do_train(model, data_loader, optimizer, scheduler, checkpointer, device, arguments, options, val_fn=val_fn,
                 tb_writer=tb_writer)
    finally:
        if tb_writer is not None:
            tb_writer.close()
    return model


def run_test(cfg, model, distributed: bool = False, output_dir: Optional[str] = None,
             dataset_names: Optional[Sequence[str]] = None) -> list:
    """Evaluate ``model`` on every dataset of ``dataset_names`` (default ``DATASETS.TEST``); results under
    ``<output_dir>/inference/<name>`` (``output_dir`` defaults to ``OUTPUT_DIR``).

    Returns the per-dataset ``EvalResult`` of ``glip.engine.inference.inference`` (None on ranks other than 0).
    """
    from glip.data.build import make_data_loader
    from glip.engine.inference import inference

    output_dir = cfg.OUTPUT_DIR if output_dir is None else output_dir
    names = tuple(cfg.DATASETS.TEST if dataset_names is None else dataset_names)
    loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed, dataset_names=names)
    results = []
    for name, loader in zip(names, loaders):
        folder = os.path.join(output_dir, "inference", name) if output_dir else None
        if folder and is_main_process():
            os.makedirs(folder, exist_ok=True)
        results.append(inference(unwrap_model(model), loader, dataset_name=name, device=cfg.MODEL.DEVICE,
                                 expected_results=cfg.TEST.EXPECTED_RESULTS,
                                 expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL,
                                 output_folder=folder, cfg=cfg))
        synchronize()
    return results


__all__ = ["train", "run_test", "seed_everything", "load_initial_weights", "resume_or_load", "build_model_on_device",
           "prepare_for_training", "validation_loader", "make_val_fn", "eval_score", "wrap_distributed",
           "reset_bn_statistics", "restart_loader_at", "load_pretrained_language", "make_tensorboard_writer"]
