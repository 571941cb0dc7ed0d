"""Hooks of the training loop (``glip.engine.trainer.Trainer``), each one concern of the reference's ``do_train``:

* :class:`LoggingHook`: the smoothed losses, the progress line every ``log_period`` iterations (and the last),
  tensorboard scalars on rank 0, the start and total-time lines;
* :class:`EvalHook`: ``val_fn`` every checkpoint period and at the end, then the plateau schedule
  (``SOLVER.USE_AUTOSTEP``) and auto-termination (``SOLVER.AUTO_TERMINATE_PATIENCE``, keeping ``model_best``);
* :class:`CheckpointHook`: ``model_XXXXXXX`` every checkpoint period, ``model_final`` at the end;
* :class:`StopOnSignalHook`: SIGINT / SIGTERM end the run after the iteration in progress with a checkpoint to
  resume from.

:func:`standard_hooks` lists them in the order ``do_train`` runs them.
"""
import datetime
import logging
import os
import signal
import threading
import time
from typing import Callable, List, Optional

import torch

from glip.engine.metrics import MetricLogger
from glip.utils.comm import all_gather, get_world_size, is_main_process

logger = logging.getLogger("glip.trainer")


class HookBase:
    """Called by the trainer: ``before_train`` once, ``after_step`` after every iteration (in registration
    order; a hook that calls ``trainer.request_stop`` ends the run after this iteration and the hooks after it
    are not called for it), ``after_train`` once at the end, also when training raised."""

    def before_train(self, trainer):
        pass

    def after_step(self, trainer):
        pass

    def after_train(self, trainer):
        pass


class LoggingHook(HookBase):
    """Loss meters (finite steps only), a progress line on rank 0 every ``log_period`` iterations and at
    ``max_iter``, and the scalars ``loss``, each loss term, ``lr`` and ``time`` to ``tb_writer`` (rank 0)."""

    def __init__(self, log_period: int = 20, tb_writer=None):
        self.log_period, self.tb_writer = log_period, tb_writer
        self.meters = MetricLogger()
        self.start_time = 0.0

    def before_train(self, trainer):
        logger.info("Start training at iteration %d of %d", trainer.start_iter, trainer.max_iter)
        self.start_time = time.time()

    def after_step(self, trainer):
        step, iteration = trainer.last_step, trainer.iteration
        if step.finite:
            self.meters.update(loss=step.total_loss, **step.loss_terms)
        self.meters.update(time=step.batch_time, data=step.data_time)
        if not is_main_process():
            return
        if self.tb_writer is not None:
            for name, value in dict(loss=step.total_loss, **step.loss_terms).items():
                self.tb_writer.add_scalar(name, float(value), iteration)
            self.tb_writer.add_scalar("lr", trainer.optimizer.param_groups[0]["lr"], iteration)
            self.tb_writer.add_scalar("time", step.batch_time, iteration)
        if iteration % self.log_period == 0 or iteration == trainer.max_iter:
            logger.info(progress_line(self.meters, iteration, trainer.max_iter, trainer.optimizer))

    def after_train(self, trainer):
        if trainer.completed:
            total = time.time() - self.start_time
            logger.info("Total training time: %s (%.4f s / it)", datetime.timedelta(seconds=int(total)),
                        total / max(trainer.iteration - trainer.start_iter, 1))


def progress_line(meters: MetricLogger, iteration: int, max_iter: int, optimizer) -> str:
    """``eta: ...  iter: N  <meters>  lr: ...  wd: ...  [max mem: MiB]`` (the reference's log line)."""
    eta = datetime.timedelta(seconds=int(meters.time.global_avg * (max_iter - iteration)))
    parts = ["eta: {}".format(eta), "iter: {}".format(iteration), str(meters),
             "lr: {:.6f}".format(optimizer.param_groups[0]["lr"]),
             "wd: {:.6f}".format(optimizer.param_groups[0]["weight_decay"])]
    if torch.cuda.is_available():
        parts.append("max mem: {:.0f}".format(torch.cuda.max_memory_allocated() / 1024.0 / 1024.0))
    return meters.delimiter.join(parts)


class EvalHook(HookBase):
    """``val_fn(model, iteration) -> float | None`` every ``period`` iterations and at ``max_iter``, in eval mode
    and without gradients (on the EMA copy with ``use_ema``); the result goes to ``arguments["eval_result"]``.
    ``autostep``: the plateau schedule steps on rank 0's result. ``patience`` (-1: off): save ``model_best`` on
    every result not below the best so far, end the run after ``patience`` results below it."""

    def __init__(self, val_fn: Callable, period: int, use_ema: bool = False, autostep: bool = False,
                 patience: int = -1):
        self.val_fn, self.period, self.use_ema = val_fn, period, use_ema
        self.autostep, self.patience = autostep, patience
        self.patience_counter, self.previous_best = 0, 0.0

    def after_step(self, trainer):
        iteration = trainer.iteration
        if iteration % self.period != 0 and iteration != trainer.max_iter:
            return
        result = self.evaluate(trainer.model, trainer.ema if self.use_ema else None, iteration)
        trainer.arguments["eval_result"] = result
        if self.autostep:
            trainer.scheduler.step(all_gather(result)[0])
        if self.patience != -1:
            self._auto_terminate(trainer, result)

    def evaluate(self, model, ema, iteration: int) -> float:
        """``val_fn`` on the model (on the EMA copy instead when ``ema`` is given); the model is back in train mode
        afterwards. Returns the result (0.0 when ``val_fn`` returns None)."""
        if is_main_process():
            logger.info("Evaluating at iteration %d", iteration)
        model.eval()
        with torch.no_grad():
            result = self.val_fn(model, iteration)
            if ema is not None:
                result = self.val_fn(ema.ema, iteration)
        model.train()
        return 0.0 if result is None else result

    def _auto_terminate(self, trainer, result: float):
        if result < self.previous_best:
            self.patience_counter += 1
        else:
            self.patience_counter, self.previous_best = 0, result
            trainer.save_checkpoint("model_best")
        logger.info("Previous best %s, patience counter %d, eval result %s", self.previous_best,
                    self.patience_counter, result)
        if self.patience_counter >= self.patience:
            logger.info("Auto termination at %d, current best %s", trainer.iteration, self.previous_best)
            trainer.request_stop("auto-termination")


class CheckpointHook(HookBase):
    """``model_{iteration:07d}`` every ``period`` iterations and ``model_final`` at ``max_iter``."""

    def __init__(self, period: int):
        self.period = period

    def after_step(self, trainer):
        if trainer.iteration % self.period == 0:
            trainer.save_checkpoint("model_{:07d}".format(trainer.iteration))
        if trainer.iteration >= trainer.max_iter:
            trainer.save_checkpoint("model_final")


class TrainingInterrupted(Exception):
    """Training ended on SIGINT / SIGTERM after ``iteration``; ``checkpoint`` resumes it (None: nothing was
    written, no output folder). ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, iteration: int, checkpoint: Optional[str]):
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if checkpoint:
            message = ("Training stopped by {} after iteration {}; checkpoint {}. Run the same command again to "
                       "resume from it".format(name, iteration, checkpoint))
        else:
            message = "Training stopped by {} after iteration {}; no checkpoint written (no output folder)".format(
                name, iteration)
        super().__init__(message)


class StopOnSignalHook(HookBase):
    """SIGINT (Ctrl-C) or SIGTERM: the iteration in progress completes, the run is checkpointed (unless
    ``last_checkpoint`` already names that iteration), one log line says where and how to resume, and
    :class:`TrainingInterrupted` is raised. Never mid-step: the request is looked at after the other hooks of an
    iteration, and reduced over processes so that every rank stops after the same iteration. A second signal
    gets the previous handler's behaviour at once (KeyboardInterrupt, termination). The handlers are installed
    for the loop only, only from the main thread, and not for a signal the process ignores."""

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.received = 0
        self._previous = {}

    def before_train(self, trainer):
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not the main thread: training does not stop gracefully on signals")
            return
        for signum in self.signals:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT of a background job stays ignored
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        if not self.received:
            self.received = signum
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._restore()
        if callable(previous):
            previous(signum, frame)
        else:
            signal.raise_signal(signum)

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def after_step(self, trainer):
        signum = self._agreed_signal(trainer.device)
        if not signum:
            return
        if trainer.checkpointed_iteration != trainer.iteration:
            trainer.save_checkpoint("model_{:07d}".format(trainer.iteration))
        self._stop(trainer, signum)

    def after_train(self, trainer):
        self._restore()
        if self.received and trainer.completed:  # a signal after the last iteration's check
            self._stop(trainer, self.received)

    def _agreed_signal(self, device) -> int:
        """The largest signal number any process received (0: none); the same on every process."""
        if get_world_size() == 1:
            return self.received
        import torch.distributed as dist

        flag = torch.tensor([self.received], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def _stop(self, trainer, signum: int):
        self.received = 0
        checkpointer = trainer.checkpointer
        name = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else ""
        path = os.path.join(checkpointer.save_dir, name) if name else None
        stop = TrainingInterrupted(signum, trainer.iteration, path)
        logger.warning(str(stop))
        raise stop


def standard_hooks(options, val_fn: Optional[Callable] = None, tb_writer=None) -> List[HookBase]:
    """The hooks of ``do_train`` for ``options`` (``glip.engine.trainer.TrainOptions``): logging (with
    ``tb_writer``), evaluation (when ``val_fn`` is given), checkpoints, stop on SIGINT / SIGTERM."""
    hooks: List[HookBase] = [LoggingHook(options.log_period, tb_writer)]
    if val_fn is not None:
        hooks.append(EvalHook(val_fn, options.checkpoint_period, use_ema=options.use_ema_for_monitor,
                              autostep=options.use_autostep, patience=options.auto_terminate_patience))
    hooks += [CheckpointHook(options.checkpoint_period), StopOnSignalHook()]
    return hooks


__all__ = ["HookBase", "LoggingHook", "EvalHook", "CheckpointHook", "StopOnSignalHook", "TrainingInterrupted",
           "standard_hooks", "progress_line"]
