"""The training loop of the reference (``do_train``), as a :class:`Trainer` with hooks (detectron2's
``TrainerBase`` / ``HookBase``).

One iteration (:meth:`Trainer.run_step`): forward under optional autocast, sum the loss terms, stop on a NaN/inf
loss (or skip the step with ``skip_nonfinite``), backward (scaled by a GradScaler for float16),
``optimizer.step()`` (which clips the full-model gradient norm when the optimizer was built with
``CLIP_GRADIENTS``), ``scheduler.step()``, the weight-decay schedule, the EMA update. Batches with too many images
without boxes (``max_neg_per_batch``) are skipped before it. Around it, the hooks of ``glip.engine.hooks``: loss
logging and tensorboard, periodic evaluation (auto-step, auto-termination), checkpoints, and a stop on SIGINT /
SIGTERM that checkpoints first.

Settings come from one place: :class:`TrainOptions`, built from the config at the edge by :func:`train_options`.
A run resumed from its last checkpoint continues exactly where the uninterrupted run would be, provided the data
loader restarts at ``arguments["iteration"]``.
"""
import dataclasses
import logging
import math
import time
from typing import List, Optional, Sequence

import torch

from glip.data.collate import Batch
from glip.engine.amp import autocast, make_grad_scaler, resolve_amp_dtype
from glip.engine.ema import ModelEma
from glip.engine.hooks import HookBase, standard_hooks
from glip.utils.comm import reduce_dict, reduce_sum

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
    """Every setting of the loop (the reference reads them from ``cfg.SOLVER`` / ``cfg.MODEL``, see
    :func:`train_options`). ``max_iter``: the schedule length; checkpoints (and evaluations) every
    ``checkpoint_period`` iterations; ``log_period``: a progress line every that many iterations."""
    max_iter: int
    checkpoint_period: int = 2500
    use_amp: bool = False
    amp_dtype: Optional[torch.dtype] = None
    ema_decay: float = 0.0
    skip_nonfinite: bool = False
    max_neg_per_batch: Optional[float] = None
    log_period: int = 20
    auto_terminate_patience: int = -1
    use_autostep: bool = False
    use_ema_for_monitor: bool = False
    weight_decay_schedule: bool = False
    weight_decay_schedule_ratio: float = 0.667


def train_options(cfg, max_iter: int) -> TrainOptions:
    """:class:`TrainOptions` of a run of ``max_iter`` iterations from the official keys (plus ``SOLVER.SKIP_NONFINITE``
    / ``SOLVER.AMP_DTYPE`` if present). ``SOLVER.CHECKPOINT_PER_EPOCH`` (with ``MAX_EPOCH >= 1``) sets the
    checkpoint period in epochs instead of ``SOLVER.CHECKPOINT_PERIOD``."""
    solver = cfg.SOLVER
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(solver.get("AMP_DTYPE", "") or "")
    period = solver.CHECKPOINT_PERIOD
    if solver.CHECKPOINT_PER_EPOCH != -1 and solver.MAX_EPOCH >= 1:
        period = int(max_iter * solver.CHECKPOINT_PER_EPOCH // solver.MAX_EPOCH)
    return TrainOptions(
        max_iter=max_iter, checkpoint_period=max(int(period), 1), use_amp=solver.USE_AMP, amp_dtype=amp_dtype,
        ema_decay=solver.MODEL_EMA, skip_nonfinite=bool(solver.get("SKIP_NONFINITE", False)),
        max_neg_per_batch=solver.MAX_NEG_PER_BATCH, auto_terminate_patience=solver.AUTO_TERMINATE_PATIENCE,
        use_autostep=solver.USE_AUTOSTEP, use_ema_for_monitor=solver.USE_EMA_FOR_MONITOR,
        weight_decay_schedule=solver.WEIGHT_DECAY_SCHEDULE,
        weight_decay_schedule_ratio=solver.WEIGHT_DECAY_SCHEDULE_RATIO)


@dataclasses.dataclass
class StepResult:
    """What one iteration leaves for the hooks: the loss terms reduced over processes (rank 0 holds the
    average), their sum, whether the loss was finite, and the seconds spent waiting for data / in total."""
    loss_terms: dict
    total_loss: torch.Tensor
    finite: bool
    data_time: float = 0.0
    batch_time: float = 0.0


class Trainer:
    """Trains ``model`` with ``optimizer`` / ``scheduler`` on ``device`` as :class:`TrainOptions` say.

    The EMA copy (``ema_decay > 0``) and the GradScaler (float16 autocast) are made when training starts, from
    the weights loaded by then, and attached to ``checkpointer``. State the hooks read: ``iteration`` (the
    loader position: skipped batches count), ``start_iter``, ``arguments`` (saved with every checkpoint),
    ``last_step`` (:class:`StepResult`), ``checkpointed_iteration`` (the iteration ``last_checkpoint`` names).
    """

    def __init__(self, model, optimizer, scheduler, checkpointer, device, options: TrainOptions,
                 hooks: Sequence[HookBase] = ()):
        self.model, self.optimizer, self.scheduler, self.checkpointer = model, optimizer, scheduler, checkpointer
        self.device, self.options = device, options
        self.hooks: List[HookBase] = list(hooks)
        self.amp_dtype = resolve_amp_dtype(device, options.use_amp, options.amp_dtype)
        self.ema: Optional[ModelEma] = None
        self.scaler: Optional[torch.amp.GradScaler] = None
        self.decay_schedule = None
        self.arguments: dict = {}
        self.iteration = self.start_iter = 0
        self.checkpointed_iteration: Optional[int] = None
        self.last_step: Optional[StepResult] = None
        self.stop_reason: Optional[str] = None
        self.completed = False

    @property
    def max_iter(self) -> int:
        return self.options.max_iter

    def train(self, data_loader, arguments: dict) -> dict:
        """Train from ``arguments["iteration"]`` to ``max_iter`` over ``data_loader`` (batches of
        ``glip.data.collate.Batch`` from that iteration on); returns ``arguments``. Entries ``model_ema`` /
        ``scaler`` of ``arguments`` (a resume) are restored into the EMA / scaler."""
        self._setup(arguments)
        for hook in self.hooks:
            hook.before_train(self)
        self.model.train()  # the model's freeze policy keeps its frozen parts (e.g. a frozen BERT) in eval mode
        try:
            self._loop(data_loader)
            self.completed = True
        finally:
            for hook in self.hooks:
                hook.after_train(self)
        return arguments

    def _setup(self, arguments: dict):
        self.arguments = arguments
        self.iteration = self.start_iter = arguments["iteration"]
        self.checkpointed_iteration = self.start_iter if self.start_iter > 0 else None
        self.scaler = make_grad_scaler(self.device, self.amp_dtype)
        if self.options.ema_decay > 0:
            self.ema = ModelEma(self.model, decay=self.options.ema_decay)
        if self.ema is not None and "model_ema" in arguments:
            self.ema.load_state_dict(arguments.pop("model_ema"))
        if self.scaler is not None and "scaler" in arguments:
            self.scaler.load_state_dict(arguments.pop("scaler"))
        self.checkpointer.ema, self.checkpointer.scaler = self.ema, self.scaler
        if self.options.weight_decay_schedule and hasattr(self.scheduler, "milestones"):
            self.decay_schedule = _WeightDecaySchedule(self.scheduler, self.options.weight_decay_schedule_ratio)

    def _loop(self, data_loader):
        end = time.time()
        for position, batch in enumerate(self._iterate(data_loader), self.start_iter + 1):
            if _too_many_negatives(batch.targets, self.options.max_neg_per_batch):
                logger.info("[WARNING] Sampled %d negative in %d in a batch, greater the allowed ratio %s, skip",
                            sum(len(t) < 1 for t in batch.targets), len(batch.targets),
                            self.options.max_neg_per_batch)
                continue
            data_time = time.time() - end
            self.iteration = self.arguments["iteration"] = position
            self.last_step = self.run_step(batch)
            self.last_step.data_time, self.last_step.batch_time = data_time, time.time() - end
            end = time.time()
            for hook in self.hooks:
                hook.after_step(self)
                if self.stop_reason is not None:
                    return
            if self.iteration >= self.max_iter:
                return

    def _iterate(self, data_loader):
        """``iter(data_loader)``; when resuming, without a draw from the global torch RNG. (A DataLoader draws its
        workers' base seed when an iterator is made: the uninterrupted run drew it at iteration 0, before the
        state the checkpoint holds, so drawing again after the restore would shift every later random number.)"""
        if self.start_iter == 0:
            return iter(data_loader)
        state = torch.get_rng_state()
        iterator = iter(data_loader)
        torch.set_rng_state(state)
        return iterator

    def run_step(self, batch: Batch) -> StepResult:
        """One optimisation step on ``batch`` (see the module docstring)."""
        with autocast(self.device, self.amp_dtype):
            loss_dict = _forward(self.model, batch, self.device)
        losses = sum(loss_dict.values())
        finite = _all_finite(losses)
        self.optimizer.zero_grad()
        if finite:
            self._backward_and_step(losses)
        elif self.options.skip_nonfinite:
            logger.error("Non-finite loss at iteration %d (%s): step skipped", self.iteration,
                         {k: float(v.detach()) for k, v in loss_dict.items()})
        else:
            raise NonFiniteLossError(self.iteration, {k: float(v.detach()) for k, v in loss_dict.items()})
        self.scheduler.step()
        if self.decay_schedule is not None:
            self.decay_schedule.step(self.optimizer)
        reduced = reduce_dict({k: v.detach().float() for k, v in loss_dict.items()})
        if self.ema is not None:
            self.ema.update(self.model)
        return StepResult(loss_terms=reduced, total_loss=sum(reduced.values()), finite=finite)

    def _backward_and_step(self, losses: torch.Tensor):
        if self.scaler is None:
            losses.backward()
            self.optimizer.step()
            return
        self.scaler.scale(losses).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def save_checkpoint(self, name: str):
        """``checkpointer.save(name)`` with ``arguments`` (on every process; rank 0 writes)."""
        self.checkpointer.save(name, **self.arguments)
        self.checkpointed_iteration = self.iteration

    def request_stop(self, reason: str):
        """End the run after the current iteration (the remaining hooks of this iteration are skipped)."""
        self.stop_reason = reason


def _too_many_negatives(targets, max_neg_per_batch: Optional[float]) -> bool:
    if max_neg_per_batch is None:
        return False
    negatives = sum(len(t) < 1 for t in targets)
    return negatives == len(targets) or negatives > len(targets) * max_neg_per_batch


def _all_finite(losses: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (so all processes skip or stop together)."""
    bad = (~torch.isfinite(losses.detach())).float().reshape(1)
    return reduce_sum(bad).item() == 0


def _forward(model, batch: Batch, device) -> dict:
    """``model(images, targets=..., captions=[each target's caption], positive_map=batch.positive_map)`` (without
    captions when the targets have none): a dict of scalar losses."""
    images = batch.images.to(device)
    targets = [t.to(device) for t in batch.targets]
    captions = [t.get_field("caption") for t in targets if "caption" in t.fields()]
    positive_map = batch.positive_map
    if torch.is_tensor(positive_map):
        positive_map = positive_map.to(device)
    if captions:
        return model(images, targets=targets, captions=captions, positive_map=positive_map)
    return model(images, targets=targets)


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


def do_train(model, data_loader, optimizer, scheduler, checkpointer, device, arguments: dict,
             options: TrainOptions, val_fn=None, tb_writer=None) -> dict:
    """Train with the standard hooks (``glip.engine.hooks.standard_hooks``: logging, ``tb_writer`` scalars,
    evaluation by ``val_fn(model, iteration) -> float | None``, checkpoints, stop on SIGINT / SIGTERM) from
    ``arguments["iteration"]`` to ``options.max_iter``; returns ``arguments``."""
    hooks = standard_hooks(options, val_fn=val_fn, tb_writer=tb_writer)
    return Trainer(model, optimizer, scheduler, checkpointer, device, options, hooks).train(data_loader, arguments)


__all__ = ["do_train", "Trainer", "HookBase", "StepResult", "TrainOptions", "train_options", "NonFiniteLossError"]
