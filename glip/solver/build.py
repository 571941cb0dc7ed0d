"""Optimizer and lr schedule from the config, with the reference's parameter groups and schedule choice.

Parameter groups (one group per trainable parameter, keyed by its name in ``model.named_parameters()``):
* lr: ``BASE_LR``; ``LANG_LR`` for names containing ``language_backbone``; ``BASE_LR * BACKBONE_BODY_LR_FACTOR``
  for ``backbone.body`` (the visual one); then ``* BIAS_LR_FACTOR`` for names containing ``bias``.
* weight decay: ``WEIGHT_DECAY``; ``WEIGHT_DECAY_BIAS`` for names containing ``bias``; then
  ``* WEIGHT_DECAY_NORM_FACTOR`` for names containing ``norm`` or ``Norm``.
The tests are plain substring tests, as in the reference, so e.g. ``relative_position_bias_table``, ``bias_lang``
and ``bias0`` count as biases and BERT's ``LayerNorm`` as a norm.
"""
import logging
from typing import Dict, List, Optional, Sequence

import torch

from glip.solver.lr_scheduler import WarmupCosineAnnealingLR, WarmupMultiStepLR, WarmupReduceLROnPlateau

logger = logging.getLogger(__name__)


def param_group_settings(name: str, base_lr: float, lang_lr: float, backbone_body_lr_factor: float,
                         bias_lr_factor: float, weight_decay: float, weight_decay_bias: float,
                         weight_decay_norm_factor: float) -> Dict[str, float]:
    """``{"lr", "weight_decay"}`` of the parameter called ``name`` (rules in the module docstring)."""
    lr, decay = base_lr, weight_decay
    if "language_backbone" in name:
        lr = lang_lr
    if "backbone.body" in name and "language_backbone.body" not in name:
        lr = base_lr * backbone_body_lr_factor
    if "bias" in name:
        lr *= bias_lr_factor
        decay = weight_decay_bias
    if "norm" in name or "Norm" in name:
        decay *= weight_decay_norm_factor
    return {"lr": lr, "weight_decay": decay}


def build_param_groups(model: torch.nn.Module, base_lr: float, lang_lr: float, backbone_body_lr_factor: float = 1.0,
                       bias_lr_factor: float = 1.0, weight_decay: float = 0.0, weight_decay_bias: float = 0.0,
                       weight_decay_norm_factor: float = 1.0) -> List[dict]:
    """One group per parameter with ``requires_grad``; each group also records the parameter's ``name``."""
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        settings = param_group_settings(name, base_lr, lang_lr, backbone_body_lr_factor, bias_lr_factor,
                                        weight_decay, weight_decay_bias, weight_decay_norm_factor)
        if "norm" in name or "Norm" in name:
            logger.debug("weight decay of %s: %s", name, settings["weight_decay"])
        groups.append({"params": [param], "name": name, **settings})
    return groups


def with_full_model_clipping(optimizer_cls, max_norm: float, norm_type: float = 2.0):
    """Subclass of ``optimizer_cls`` whose ``step`` first clips the total gradient norm of all its parameters
    to ``max_norm`` (``clip_grad_norm_`` over every group at once)."""

    class FullModelGradientClippingOptimizer(optimizer_cls):
        clip_max_norm = max_norm
        clip_norm_type = norm_type

        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_max_norm, norm_type=self.clip_norm_type)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = "FullModelGradientClipping" + optimizer_cls.__name__
    return FullModelGradientClippingOptimizer


def make_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum ``SOLVER.MOMENTUM``) or AdamW (default betas/eps) over the reference's parameter groups,
    clipping the full-model gradient norm in ``step`` when ``SOLVER.CLIP_GRADIENTS`` asks for it."""
    solver = cfg.SOLVER
    groups = build_param_groups(
        model, base_lr=solver.BASE_LR, lang_lr=solver.LANG_LR,
        backbone_body_lr_factor=solver.BACKBONE_BODY_LR_FACTOR, bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay=solver.WEIGHT_DECAY, weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        weight_decay_norm_factor=solver.WEIGHT_DECAY_NORM_FACTOR)
    clip = solver.CLIP_GRADIENTS
    if solver.OPTIMIZER == "SGD":
        optimizer_cls, kwargs = torch.optim.SGD, {"momentum": solver.MOMENTUM}
    elif solver.OPTIMIZER == "ADAMW":
        optimizer_cls, kwargs = torch.optim.AdamW, {}
    else:
        raise ValueError("SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got {!r}".format(solver.OPTIMIZER))
    if clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0.0:
        optimizer_cls = with_full_model_clipping(optimizer_cls, clip.CLIP_VALUE, clip.NORM_TYPE)
    elif clip.ENABLED:
        logger.warning("SOLVER.CLIP_GRADIENTS enabled with CLIP_TYPE %r and CLIP_VALUE %s: no clipping (only "
                       "'full_model' with a positive value clips, as in the reference)", clip.CLIP_TYPE,
                       clip.CLIP_VALUE)
    try:
        # One fused kernel per tensor: with the reference's one-group-per-parameter layout the default (foreach)
        # step runs each group's tensor through a dozen separate ops, ~8x slower on a CPU (tools/benchmark.py).
        return optimizer_cls(groups, solver.BASE_LR, fused=True, **kwargs)
    except (RuntimeError, TypeError) as err:
        logger.info("fused %s not available here (%s); using the default implementation", optimizer_cls.__name__,
                    err)
        return optimizer_cls(groups, solver.BASE_LR, **kwargs)


def resolve_milestones(steps: Sequence[float], max_iter: int) -> List[int]:
    """``STEPS`` to iterations: values < 1 are fractions of ``max_iter`` (``round(step * max_iter)``)."""
    return [round(step * max_iter) if step < 1 else int(step) for step in steps]


def make_lr_scheduler(cfg, optimizer, max_iter: Optional[int] = None):
    """The schedule the config selects, in the reference's order of precedence: ``MULTI_MAX_EPOCH`` (one
    multistep schedule per stage, a list), ``USE_COSINE``, ``USE_AUTOSTEP``, else warmup + multistep.

    ``max_iter``: the schedule length in iterations; required when ``SOLVER.MAX_EPOCH > 0`` (it depends on the
    dataset size: ``glip.data.build.train_iterations``), else ``SOLVER.MAX_ITER`` by default.
    """
    solver = cfg.SOLVER
    if max_iter is None:
        if solver.MAX_EPOCH > 0:
            raise ValueError("SOLVER.MAX_EPOCH is {}: pass the schedule length max_iter (glip.data.build."
                             "train_iterations(cfg, len(dataset)))".format(solver.MAX_EPOCH))
        max_iter = solver.MAX_ITER
    warmup = dict(warmup_factor=solver.WARMUP_FACTOR, warmup_iters=solver.WARMUP_ITERS,
                  warmup_method=solver.WARMUP_METHOD)
    if solver.MULTI_MAX_EPOCH:
        if len(solver.MULTI_MAX_EPOCH) != len(solver.STEPS):
            raise ValueError("SOLVER.MULTI_MAX_EPOCH and SOLVER.STEPS need one entry per stage")
        return [WarmupMultiStepLR(optimizer, [round(step * stage_iters) for step in stage_steps], solver.GAMMA,
                                  **warmup)
                for stage_steps, stage_iters in zip(solver.STEPS, solver.MULTI_MAX_ITER)]
    if solver.USE_COSINE:
        return WarmupCosineAnnealingLR(optimizer, max_iter, solver.GAMMA, eta_min=solver.MIN_LR, **warmup)
    if solver.USE_AUTOSTEP:
        return WarmupReduceLROnPlateau(optimizer, max_iter, solver.GAMMA, eta_min=solver.MIN_LR,
                                       patience=solver.STEP_PATIENCE, **warmup)
    return WarmupMultiStepLR(optimizer, resolve_milestones(solver.STEPS, max_iter), solver.GAMMA, **warmup)


__all__ = ["make_optimizer", "make_lr_scheduler", "build_param_groups", "resolve_milestones"]
