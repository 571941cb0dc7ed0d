"""The training loop of the reference (``do_train``): forward to a loss dict, backward, step, schedule, log,
checkpoint, evaluate.

Per iteration: skip batches with too many images without boxes (``MAX_NEG_PER_BATCH``), forward under optional
autocast, sum the loss terms, stop on a NaN/inf loss (or skip the step with ``skip_nonfinite``), backward (scaled
by a GradScaler for float16), ``optimizer.step()`` (which clips the full-model gradient norm when the optimizer
was built with ``CLIP_GRADIENTS``), ``scheduler.step()``, EMA update, loss logging (reduced over processes),
periodic evaluation (``val_fn``) and checkpoints. A run resumed from its last checkpoint continues exactly where
the uninterrupted run would be, provided the data loader restarts at ``arguments["iteration"]``.
"""
import dataclasses
import datetime
import logging
import math
import time
from collections import defaultdict, deque
from typing import Callable, Optional

import torch

from glip.engine.amp import autocast, make_grad_scaler, resolve_amp_dtype
from glip.engine.ema import ModelEma
from glip.utils.comm import all_gather, is_main_process, reduce_dict, reduce_sum

logger = logging.getLogger("glip.trainer")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the optimizer was not stepped with it."""

    def __init__(self, iteration: int, loss_terms: dict):
        self.iteration = iteration
        self.loss_terms = loss_terms
        terms = ", ".join("{}={}".format(k, v) for k, v in loss_terms.items())
        super().__init__("non-finite loss at iteration {}: {} (set SOLVER.SKIP_NONFINITE to skip such steps)"
                         .format(iteration, terms))


@dataclasses.dataclass
class TrainOptions:
    """Loop settings (the reference reads them from ``cfg.SOLVER`` / ``cfg.MODEL``, see :func:`train_options`)."""
    use_amp: bool = False
    amp_dtype: Optional[torch.dtype] = None
    ema_decay: float = 0.0
    skip_nonfinite: bool = False
    max_neg_per_batch: Optional[float] = None
    log_period: int = 20
    max_epoch: int = 0
    checkpoint_per_epoch: float = -1.0
    auto_terminate_patience: int = -1
    use_autostep: bool = False
    use_ema_for_monitor: bool = False
    weight_decay_schedule: bool = False
    weight_decay_schedule_ratio: float = 0.667


def train_options(cfg) -> TrainOptions:
    """:class:`TrainOptions` from the official keys (``SOLVER.SKIP_NONFINITE`` / ``SOLVER.AMP_DTYPE`` if present)."""
    solver = cfg.SOLVER
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(solver.get("AMP_DTYPE", "") or "")
    return TrainOptions(
        use_amp=solver.USE_AMP, amp_dtype=amp_dtype, ema_decay=solver.MODEL_EMA,
        skip_nonfinite=bool(solver.get("SKIP_NONFINITE", False)), max_neg_per_batch=solver.MAX_NEG_PER_BATCH,
        max_epoch=solver.MAX_EPOCH,
        checkpoint_per_epoch=solver.CHECKPOINT_PER_EPOCH, auto_terminate_patience=solver.AUTO_TERMINATE_PATIENCE,
        use_autostep=solver.USE_AUTOSTEP, use_ema_for_monitor=solver.USE_EMA_FOR_MONITOR,
        weight_decay_schedule=solver.WEIGHT_DECAY_SCHEDULE,
        weight_decay_schedule_ratio=solver.WEIGHT_DECAY_SCHEDULE_RATIO)


class SmoothedValue:
    """A series with its median over the last ``window_size`` values and its global average."""

    def __init__(self, window_size: int = 20):
        self.deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float):
        self.deque.append(value)
        self.count += 1
        self.total += value if value == value else 0.0

    @property
    def median(self) -> float:
        return torch.tensor(list(self.deque)).median().item()

    @property
    def global_avg(self) -> float:
        return self.total / max(self.count, 1)


class MetricLogger:
    """Named :class:`SmoothedValue` meters; ``str()`` gives ``name: median (global avg)`` joined by ``delimiter``."""

    def __init__(self, delimiter: str = "  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for name, value in kwargs.items():
            self.meters[name].update(value.item() if torch.is_tensor(value) else float(value))

    def __getattr__(self, name):
        meters = self.__dict__.get("meters", {})
        if name in meters:
            return meters[name]
        raise AttributeError("'MetricLogger' object has no attribute '{}'".format(name))

    def __str__(self):
        return self.delimiter.join("{}: {:.4f} ({:.4f})".format(name, meter.median, meter.global_avg)
                                   for name, meter in self.meters.items())


def _unpack(batch):
    """``(images, targets, positive_map)`` from a collator batch ``(images, targets, idxs, positive_map, ...)``."""
    images, targets = batch[0], batch[1]
    positive_map = batch[3] if len(batch) > 3 else None
    return images, targets, positive_map


def _too_many_negatives(targets, max_neg_per_batch: Optional[float]) -> bool:
    if max_neg_per_batch is None:
        return False
    negatives = sum(len(t) < 1 for t in targets)
    return negatives == len(targets) or negatives > len(targets) * max_neg_per_batch


def _all_finite(losses: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (so all processes skip or stop together)."""
    bad = (~torch.isfinite(losses.detach())).float().reshape(1)
    return reduce_sum(bad).item() == 0


def _forward(model, images, targets, positive_map, device):
    images = images.to(device)
    targets = [t.to(device) for t in targets]
    captions = [t.get_field("caption") for t in targets if "caption" in t.fields()]
    if torch.is_tensor(positive_map):
        positive_map = positive_map.to(device)
    if captions:
        return model(images, targets=targets, captions=captions, positive_map=positive_map)
    return model(images, targets=targets)


def _progress_line(meters, iteration, max_iter, optimizer) -> str:
    eta = datetime.timedelta(seconds=int(meters.time.global_avg * (max_iter - iteration)))
    parts = ["eta: {}".format(eta), "iter: {}".format(iteration), str(meters),
             "lr: {:.6f}".format(optimizer.param_groups[0]["lr"]),
             "wd: {:.6f}".format(optimizer.param_groups[0]["weight_decay"])]
    if torch.cuda.is_available():
        parts.append("max mem: {:.0f}".format(torch.cuda.max_memory_allocated() / 1024.0 / 1024.0))
    return meters.delimiter.join(parts)


class _WeightDecaySchedule:
    """Multiply every group's weight decay by ``gamma`` once the iteration passes ``ratio`` of each milestone."""

    def __init__(self, scheduler, ratio: float):
        self.scheduler, self.ratio = scheduler, ratio
        self.milestones = list(scheduler.milestones)
        self.target = sum(scheduler.last_epoch >= m * ratio for m in self.milestones)

    def step(self, optimizer):
        upcoming = self.milestones[self.target] if self.target < len(self.milestones) else math.inf
        if self.scheduler.last_epoch >= upcoming * self.ratio:
            logger.info("Drop the weight decay by %s", self.scheduler.gamma)
            for group in optimizer.param_groups:
                if "weight_decay" in group:
                    group["weight_decay"] *= self.scheduler.gamma
            self.target += 1


def do_train(model, data_loader, optimizer, scheduler, checkpointer, device, checkpoint_period: int,
             arguments: dict, cfg=None, val_fn: Optional[Callable] = None, meters=None, tb_writer=None,
             ema: Optional[ModelEma] = None, scaler=None, max_iter: Optional[int] = None,
             options: Optional[TrainOptions] = None, **overrides):
    """Train from ``arguments["iteration"]`` to ``max_iter`` (default ``len(data_loader)``); returns ``arguments``.

    The data loader yields collator batches ``(images, targets, idxs, positive_map, positive_map_eval,
    greenlight_map)`` starting at the resume iteration. The model is called as ``model(images, targets=targets,
    captions=[caption of each target], positive_map=positive_map)`` (or without captions when targets have
    none) and returns a dict of scalar losses. Settings come from ``options``, else ``train_options(cfg)``, else
    the :class:`TrainOptions` defaults, with ``overrides`` (e.g. ``use_amp=True``) applied on top.

    ``val_fn(model, iteration) -> float | None`` runs every ``checkpoint_period`` iterations and at the end (the
    model is in eval mode meanwhile); ``tb_writer`` (a SummaryWriter) gets the scalars on rank 0. EMA (``ema``,
    or one made for ``ema_decay > 0``) and GradScaler (``scaler``, or one made for float16 autocast) are attached
    to ``checkpointer`` and restored from ``arguments`` entries ``model_ema`` / ``scaler`` if present there.
    """
    opts = options or (train_options(cfg) if cfg is not None else TrainOptions())
    opts = dataclasses.replace(opts, **overrides)
    meters = meters if meters is not None else MetricLogger()
    max_iter = len(data_loader) if max_iter is None else max_iter
    start_iter = arguments["iteration"]
    if opts.checkpoint_per_epoch != -1 and opts.max_epoch >= 1:
        checkpoint_period = int(max_iter * opts.checkpoint_per_epoch // opts.max_epoch)
    checkpoint_period = max(int(checkpoint_period), 1)

    amp_dtype = resolve_amp_dtype(device, opts.use_amp, opts.amp_dtype)
    if scaler is None:
        scaler = make_grad_scaler(device, amp_dtype)
    if ema is None and opts.ema_decay > 0:
        ema = ModelEma(model, decay=opts.ema_decay)
    if ema is not None and "model_ema" in arguments:
        ema.load_state_dict(arguments.pop("model_ema"))
    if scaler is not None and "scaler" in arguments:
        scaler.load_state_dict(arguments.pop("scaler"))
    checkpointer.ema = checkpointer.ema if getattr(checkpointer, "ema", None) is not None else ema
    checkpointer.scaler = checkpointer.scaler if getattr(checkpointer, "scaler", None) is not None else scaler
    decay_schedule = (_WeightDecaySchedule(scheduler, opts.weight_decay_schedule_ratio)
                      if opts.weight_decay_schedule and hasattr(scheduler, "milestones") else None)
    patience_counter, previous_best = 0, 0.0
    main_process = is_main_process()

    logger.info("Start training at iteration %d of %d", start_iter, max_iter)
    model.train()  # the model's freeze policy keeps its frozen parts (e.g. a frozen BERT) in eval mode
    start_training_time = end = time.time()
    iteration = start_iter
    for iteration, batch in enumerate(data_loader, start_iter):
        images, targets, positive_map = _unpack(batch)
        if _too_many_negatives(targets, opts.max_neg_per_batch):
            logger.info("[WARNING] Sampled %d negative in %d in a batch, greater the allowed ratio %s, skip",
                        sum(len(t) < 1 for t in targets), len(targets), opts.max_neg_per_batch)
            continue
        data_time = time.time() - end
        iteration += 1
        arguments["iteration"] = iteration

        with autocast(device, amp_dtype):
            loss_dict = _forward(model, images, targets, positive_map, device)
        losses = sum(loss_dict.values())
        finite = _all_finite(losses)
        optimizer.zero_grad()
        if finite:
            if scaler is not None:
                scaler.scale(losses).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                losses.backward()
                optimizer.step()
        elif opts.skip_nonfinite:
            logger.error("Non-finite loss at iteration %d (%s): step skipped", iteration,
                         {k: float(v.detach()) for k, v in loss_dict.items()})
        else:
            raise NonFiniteLossError(iteration, {k: float(v.detach()) for k, v in loss_dict.items()})
        scheduler.step()
        if decay_schedule is not None:
            decay_schedule.step(optimizer)

        loss_dict_reduced = reduce_dict({k: v.detach().float() for k, v in loss_dict.items()})
        losses_reduced = sum(loss_dict_reduced.values())
        if finite:
            meters.update(loss=losses_reduced, **loss_dict_reduced)
        if ema is not None:
            ema.update(model)
        batch_time = time.time() - end
        end = time.time()
        meters.update(time=batch_time, data=data_time)
        if main_process and tb_writer is not None:
            for name, value in dict(loss=losses_reduced, **loss_dict_reduced).items():
                tb_writer.add_scalar(name, float(value), iteration)
            tb_writer.add_scalar("lr", optimizer.param_groups[0]["lr"], iteration)
            tb_writer.add_scalar("time", batch_time, iteration)
        if main_process and (iteration % opts.log_period == 0 or iteration == max_iter):
            logger.info(_progress_line(meters, iteration, max_iter, optimizer))

        if val_fn is not None and (iteration % checkpoint_period == 0 or iteration == max_iter):
            eval_result = _evaluate(val_fn, model, ema if opts.use_ema_for_monitor else None, iteration)
            arguments["eval_result"] = eval_result
            if opts.use_autostep:
                scheduler.step(all_gather(eval_result)[0])
            if opts.auto_terminate_patience != -1:
                if eval_result < previous_best:
                    patience_counter += 1
                else:
                    patience_counter, previous_best = 0, eval_result
                    checkpointer.save("model_best", **arguments)
                logger.info("Previous best %s, patience counter %d, eval result %s", previous_best,
                            patience_counter, eval_result)
                if patience_counter >= opts.auto_terminate_patience:
                    logger.info("Auto termination at %d, current best %s", iteration, previous_best)
                    break

        if iteration % checkpoint_period == 0:
            checkpointer.save("model_{:07d}".format(iteration), **arguments)
        if iteration >= max_iter:
            checkpointer.save("model_final", **arguments)
            break

    total = time.time() - start_training_time
    logger.info("Total training time: %s (%.4f s / it)", datetime.timedelta(seconds=int(total)),
                total / max(iteration - start_iter, 1))
    return arguments


def _evaluate(val_fn, model, ema, iteration):
    """``val_fn`` on the model (on the EMA copy instead when ``ema`` is given); the model is back in train mode
    afterwards. Returns the result (0.0 when ``val_fn`` returns None)."""
    if is_main_process():
        logger.info("Evaluating at iteration %d", iteration)
    model.eval()
    with torch.no_grad():
        result = val_fn(model, iteration)
        if ema is not None:
            result = val_fn(ema.ema, iteration)
    model.train()
    return 0.0 if result is None else result


__all__ = ["do_train", "TrainOptions", "train_options", "NonFiniteLossError", "MetricLogger", "SmoothedValue"]
