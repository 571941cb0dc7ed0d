"""CPU benchmark of one training step: the whole step (forward, backward, optimizer) and every stage alone.

`benchmark_training_step(model, batch, stages, runs, warmup)` times `model(**batch)` -> summed losses ->
`backward()` -> `optimizer.step()` (when one is given), median seconds of each phase. Stage times are measured in
isolation: the inputs of every stage (e.g. `backbone`, `tower.03.VLFuse`) are captured during one training
forward, then the stage alone runs forward (train mode, autograd on) and backward (random output gradients), so
each stage gets a forward and a backward time although autograd interleaves the stages' backward passes. Stages
with gradient checkpointing recompute their forward inside the backward, as in training. `rest` is what the
outermost stages do not cover (predictors, losses, anchors; nested stages such as the tower blocks inside the
head are not counted twice).
"""
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map


def _detached_like(value):
    """A leaf copy of the tensors of a nested input (requires_grad as the original), other values as they are."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    return value


def capture_stage_inputs(run: Callable[[], object], stages: Sequence[Tuple[str, nn.Module]]) -> Dict[str, tuple]:
    """{stage name: (args, kwargs)} of the first call of every stage during `run()`, as detached leaves."""
    captured, handles = {}, []

    def hook(name):
        def pre(module, args, kwargs):
            if name not in captured:
                captured[name] = (tree_map(_detached_like, args), tree_map(_detached_like, kwargs))
        return pre

    for name, module in stages:
        handles.append(module.register_forward_pre_hook(hook(name), with_kwargs=True))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _grad_tensors(output) -> List[torch.Tensor]:
    return [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor) and t.requires_grad]


def time_stage(module: nn.Module, args: tuple, kwargs: dict, runs: int, warmup: int = 1,
               clock: Callable[[], float] = time.perf_counter) -> Tuple[float, float]:
    """Median (forward, backward) seconds of one stage alone in train mode, gradients N(0, 1) on its outputs."""
    gen = torch.Generator().manual_seed(0)
    forward, backward = [], []
    for i in range(warmup + runs):
        for leaf in tree_flatten((args, kwargs))[0]:
            if isinstance(leaf, torch.Tensor):
                leaf.grad = None
        module.zero_grad(set_to_none=True)
        start = clock()
        outputs = _grad_tensors(module(*args, **kwargs))
        fwd = clock() - start
        grads = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in outputs]
        start = clock()
        if outputs:
            torch.autograd.backward(outputs, grads)
        if i >= warmup:
            forward.append(fwd)
            backward.append(clock() - start)
        del outputs
    return statistics.median(forward), statistics.median(backward)


def benchmark_training_step(model: nn.Module, batch: dict, stages: Sequence[Tuple[str, nn.Module]] = (),
                            runs: int = 3, warmup: int = 1, optimizer: Optional[torch.optim.Optimizer] = None,
                            clock: Callable[[], float] = time.perf_counter, amp_dtype: Optional[torch.dtype] = None,
                            scaler: Optional["torch.amp.GradScaler"] = None) -> dict:
    """Median seconds of a training step of `model(**batch)` (a loss dict) and of each stage alone.

    With `amp_dtype` the forwards run under autocast of the batch's device; `scaler` scales the loss and steps the
    optimizer (float16).

    Returns {"forward", "backward", "optimizer", "step": medians of the whole step's phases, "steps": every step's
    seconds, "stages": {name: {"forward", "backward"}}, "rest": {"forward", "backward"}, "peak_rss_mb"}.
    """
    from glip.utils.profiling import peak_rss_mb

    model.train()
    device_type = next(model.parameters()).device.type

    def forward():
        if amp_dtype is None:
            return model(**batch)
        with torch.autocast(device_type, dtype=amp_dtype):
            return model(**batch)

    def one_step():
        model.zero_grad(set_to_none=True)
        t0 = clock()
        loss = sum(forward().values())
        t1 = clock()
        (loss if scaler is None else scaler.scale(loss)).backward()
        t2 = clock()
        if optimizer is not None and scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        elif optimizer is not None:
            optimizer.step()
        return t1 - t0, t2 - t1, clock() - t2

    for _ in range(warmup):
        one_step()
    phases = [one_step() for _ in range(runs)]
    peak = peak_rss_mb()
    captured = capture_stage_inputs(forward, stages)
    stage_times = {}
    autocast = torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None)
    for name, module in stages:
        if name in captured:
            with autocast:
                fwd, bwd = time_stage(module, *captured[name], runs=runs, warmup=warmup, clock=clock)
            stage_times[name] = {"forward": fwd, "backward": bwd}
    model.zero_grad(set_to_none=True)
    medians = [statistics.median(p[i] for p in phases) for i in range(3)]
    outer = _outermost(stages)
    rest = {phase: medians[i] - sum(t[phase] for name, t in stage_times.items() if name in outer)
            for i, phase in enumerate(("forward", "backward"))}
    return {"forward": medians[0], "backward": medians[1], "optimizer": medians[2],
            "step": statistics.median(sum(p) for p in phases), "steps": [sum(p) for p in phases],
            "stages": stage_times, "rest": rest, "peak_rss_mb": peak}


def _outermost(stages: Sequence[Tuple[str, nn.Module]]) -> set:
    """Names of the stages not inside another stage's module (the head holds the tower blocks): the stages whose
    times add up without counting a module twice."""
    inner = {name for name, module in stages
             for _, other in stages if other is not module and any(m is module for m in other.modules())}
    return {name for name, _ in stages} - inner


def format_training_report(result: dict) -> str:
    """Human-readable table of a `benchmark_training_step` result."""
    lines = [f"  {'stage':<28s} {'forward':>9s} {'backward':>9s}"]
    for name, t in result["stages"].items():
        lines.append(f"  {name:<28s} {t['forward']:8.3f}s {t['backward']:8.3f}s")
    lines.append(f"  {'rest (predictors, losses)':<28s} {result['rest']['forward']:8.3f}s "
                 f"{result['rest']['backward']:8.3f}s")
    lines.append(f"  {'whole step':<28s} {result['forward']:8.3f}s {result['backward']:8.3f}s  + optimizer "
                 f"{result['optimizer']:.3f}s = {result['step']:.3f}s; peak RSS {result['peak_rss_mb']:.0f} MiB")
    return "\n".join(lines)
