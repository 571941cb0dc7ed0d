"""Learning rates per iteration against hand-computed values."""
import math

import pytest
import torch

from glip.solver.lr_scheduler import WarmupCosineAnnealingLR, WarmupMultiStepLR, WarmupReduceLROnPlateau


def _optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(optimizer, scheduler, n):
    """lr used at iterations 1..n (the scheduler is stepped after each iteration)."""
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_multistep_linear_warmup():
    opt = _optimizer(0.1)
    sched = WarmupMultiStepLR(opt, [4, 6], gamma=0.1, warmup_factor=0.25, warmup_iters=4, warmup_method="linear")
    # warmup factor 0.25 * (1 - e/4) + e/4 for e = 0..3, then 0.1 ** (milestones <= e)
    expected = [0.025, 0.04375, 0.0625, 0.08125, 0.01, 0.01, 0.001, 0.001]
    assert _lrs(opt, sched, 8) == pytest.approx(expected, rel=1e-12)


def test_multistep_constant_warmup_and_milestone_inside_warmup():
    opt = _optimizer(1.0)
    sched = WarmupMultiStepLR(opt, [1], gamma=0.5, warmup_factor=0.1, warmup_iters=3, warmup_method="constant")
    assert _lrs(opt, sched, 4) == pytest.approx([0.1, 0.05, 0.05, 0.5], rel=1e-12)


def test_multistep_rejects_bad_arguments():
    with pytest.raises(ValueError):
        WarmupMultiStepLR(_optimizer(), [5, 3])
    with pytest.raises(ValueError):
        WarmupMultiStepLR(_optimizer(), [3], warmup_method="exp")


def test_cosine_after_warmup_uses_max_iters_as_period():
    opt = _optimizer(1.0)
    sched = WarmupCosineAnnealingLR(opt, max_iters=4, warmup_factor=0.5, warmup_iters=2, warmup_method="constant",
                                    eta_min=0.1)
    cos = lambda e: 0.1 + 0.9 * (1 + math.cos(math.pi * (e - 2) / 4)) / 2  # noqa: E731
    expected = [0.5, 0.5, 1.0, cos(3), 0.55, cos(5), 0.1]
    assert _lrs(opt, sched, 7) == pytest.approx(expected, rel=1e-12)


def test_scheduler_state_round_trip():
    opt = _optimizer(0.1)
    sched = WarmupMultiStepLR(opt, [3], warmup_iters=2)
    _lrs(opt, sched, 4)
    opt2 = _optimizer(0.1)
    sched2 = WarmupMultiStepLR(opt2, [3], warmup_iters=2)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert _lrs(opt2, sched2, 3) == _lrs(opt, sched, 3)


def test_plateau_warmup_then_reduce_on_plateau():
    opt = _optimizer(1.0)
    sched = WarmupReduceLROnPlateau(opt, max_iters=100, gamma=0.1, warmup_factor=0.5, warmup_iters=3,
                                    warmup_method="linear", eta_min=0.0, patience=1)
    # construction keeps the base lr; warmup steps at last_epoch 0, 1, then factor 1 from warmup_iters - 1
    assert _lrs(opt, sched, 4) == pytest.approx([1.0, 0.5, 0.5 * (2 / 3) + 1 / 3, 1.0], rel=1e-12)
    assert sched.last_epoch == 3
    sched.step()  # after warmup, no metric: nothing happens
    assert sched.last_epoch == 3 and opt.param_groups[0]["lr"] == 1.0
    for metric in (0.5, 0.4):
        sched.step(metric)
    assert opt.param_groups[0]["lr"] == 1.0  # one bad evaluation <= patience
    sched.step(0.3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
