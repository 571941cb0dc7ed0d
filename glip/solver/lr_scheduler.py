"""Per-iteration learning-rate schedules with warmup, as the reference's solver uses them.

All schedules are stepped once per training iteration (``last_epoch`` counts iterations). The lr used at
iteration ``i`` (1-based) is the one computed for ``last_epoch = i - 1``.
"""
import math
from bisect import bisect_right
from typing import Sequence

import torch

WARMUP_METHODS = ("constant", "linear")


def warmup_multiplier(iteration: int, warmup_iters: int, warmup_factor: float, method: str) -> float:
    """Factor on the base lr during warmup: ``warmup_factor`` (constant) or linear from it to 1; 1 after."""
    if iteration >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    alpha = float(iteration) / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


def _check_method(method: str):
    if method not in WARMUP_METHODS:
        raise ValueError("warmup_method must be one of {}, got {!r}".format(WARMUP_METHODS, method))


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """``base_lr * warmup * gamma ** (number of milestones <= iteration)``."""

    def __init__(self, optimizer, milestones: Sequence[int], gamma: float = 0.1, warmup_factor: float = 1.0 / 3,
                 warmup_iters: int = 500, warmup_method: str = "linear", last_epoch: int = -1):
        if list(milestones) != sorted(milestones):
            raise ValueError("milestones must be increasing, got {}".format(list(milestones)))
        _check_method(warmup_method)
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warmup = warmup_multiplier(self.last_epoch, self.warmup_iters, self.warmup_factor, self.warmup_method)
        decay = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * warmup * decay for base_lr in self.base_lrs]


class WarmupCosineAnnealingLR(torch.optim.lr_scheduler.LRScheduler):
    """Warmup, then ``eta_min + (base_lr - eta_min) * (1 + cos(pi * (it - warmup_iters) / max_iters)) / 2``.

    As in the reference the cosine period is ``max_iters`` (not ``max_iters - warmup_iters``), so the lr does not
    quite reach ``eta_min`` at the last iteration when there is a warmup. ``gamma`` is accepted and unused.
    """

    def __init__(self, optimizer, max_iters: int, gamma: float = 0.1, warmup_factor: float = 1.0 / 3,
                 warmup_iters: int = 500, warmup_method: str = "linear", eta_min: float = 0.0,
                 last_epoch: int = -1):
        _check_method(warmup_method)
        self.max_iters = max_iters
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch < self.warmup_iters:
            warmup = warmup_multiplier(self.last_epoch, self.warmup_iters, self.warmup_factor, self.warmup_method)
            return [base_lr * warmup for base_lr in self.base_lrs]
        progress = (self.last_epoch - self.warmup_iters) / self.max_iters
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]


class WarmupReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """Warmup by iteration, then the lr drops by ``gamma`` when the monitored metric (mode 'max', e.g. AP) has not
    improved for ``patience`` evaluations (floor ``eta_min``).

    Behaviour kept from the reference: construction leaves the optimizer's lr untouched (the first iteration runs
    at the full base lr); each ``step()`` during warmup sets ``base_lr * factor(last_epoch)`` (factor 1 from
    ``warmup_iters - 1`` on) and advances ``last_epoch``; after warmup ``step()`` without a metric does nothing
    and ``step(metric)`` is the plateau logic (a falsy metric such as 0.0 is ignored).
    """

    def __init__(self, optimizer, max_iters: int, gamma: float = 0.1, warmup_factor: float = 1.0 / 3,
                 warmup_iters: int = 500, warmup_method: str = "linear", eta_min: float = 0.0,
                 last_epoch: int = -1, patience: int = 5):
        _check_method(warmup_method)
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.eta_min = eta_min
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in group for group in optimizer.param_groups):
            raise KeyError("param groups lack 'initial_lr' when resuming the scheduler")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        super().__init__(optimizer, mode="max", factor=gamma, patience=patience, min_lr=eta_min)

    def step(self, metrics=None):
        if self.last_epoch < self.warmup_iters:
            warmup = warmup_multiplier(self.last_epoch, self.warmup_iters, self.warmup_factor, self.warmup_method)
            if self.last_epoch >= self.warmup_iters - 1:
                warmup = 1.0
            for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base_lr * warmup
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
            self.last_epoch += 1
        elif metrics:
            super().step(metrics)
