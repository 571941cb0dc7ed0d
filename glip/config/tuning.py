"""Transfer modes (``SOLVER.TUNING_HIGHLEVEL_OVERRIDE``) as named freeze policies.

One table, :data:`TUNING_MODES`, says for every mode of the reference's ``finetune.py`` which parts of GLIP
train:

=====================  ========  ===  ===  ============  ============  ========
mode                   backbone  FPN  RPN  linear probe  prompt offset language
=====================  ========  ===  ===  ============  ============  ========
full                   train     tr.  tr.  no            no            train
linear_prob            frozen    fr.  tr.  yes           no            frozen
language_prompt_v1     frozen    fr.  fr.  no            no            train
language_prompt_v2     frozen    fr.  fr.  no            yes           frozen
language_prompt_v3     frozen    fr.  fr.  yes           no            train
language_prompt_v4     frozen    fr.  fr.  yes           yes           frozen
=====================  ========  ===  ===  ============  ============  ========

:func:`apply_tuning_highlevel_override` writes a mode into the individual config flags (the model builder
reads only those); :func:`is_trainable` / :func:`apply_freeze_policy` turn the flags into ``requires_grad`` per
parameter name, with the reference's rules: a frozen RPN freezes the whole head except the prompt offset
``rpn.tunable_linear``; linear probing keeps only the predictor-like head parameters
(:data:`LINEAR_PROB_TRAINABLE`); ``rpn.head.cls_logits`` is always frozen when the dot-product token loss
is used (GLIP scores boxes against tokens, the class layer is unused).
"""
from dataclasses import dataclass
from typing import Iterable, List

# Substrings of the head parameter names that stay trainable under MODEL.LINEAR_PROB (the reference's list).
LINEAR_PROB_TRAINABLE = ("bbox_pred", "cls_logits", "centerness", "cosine_scale", "dot_product_projection_text",
                         "head.log_scale", "head.bias_lang", "head.bias0")
PROMPT_OFFSET = "rpn.tunable_linear."


@dataclass(frozen=True)
class FreezePolicy:
    """Which parts of GLIP are frozen; field names follow the config keys they set."""
    freeze_backbone: bool = False       # MODEL.BACKBONE.FREEZE (backbone.body)
    freeze_fpn: bool = False            # MODEL.FPN.FREEZE (backbone.fpn)
    freeze_rpn: bool = False            # MODEL.RPN.FREEZE (rpn.*, except the prompt offset)
    linear_prob: bool = False           # MODEL.LINEAR_PROB (rpn: only LINEAR_PROB_TRAINABLE)
    add_linear_layer: bool = False      # MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER (adds rpn.tunable_linear)
    freeze_language: bool = False       # MODEL.LANGUAGE_BACKBONE.FREEZE (language_backbone.*)
    freeze_cls_logits: bool = True      # MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS


TUNING_MODES = {
    "full": FreezePolicy(),
    "linear_prob": FreezePolicy(True, True, False, True, False, True),
    "language_prompt_v1": FreezePolicy(True, True, True, False, False, False),
    "language_prompt_v2": FreezePolicy(True, True, True, False, True, True),
    "language_prompt_v3": FreezePolicy(True, True, True, True, False, False),
    "language_prompt_v4": FreezePolicy(True, True, True, True, True, True),
}


def policy_from_config(cfg) -> FreezePolicy:
    """The policy the individual flags of ``cfg`` describe (after any high-level override)."""
    return FreezePolicy(
        freeze_backbone=cfg.MODEL.BACKBONE.FREEZE, freeze_fpn=cfg.MODEL.FPN.FREEZE, freeze_rpn=cfg.MODEL.RPN.FREEZE,
        linear_prob=cfg.MODEL.LINEAR_PROB, add_linear_layer=cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER,
        freeze_language=cfg.MODEL.LANGUAGE_BACKBONE.FREEZE,
        freeze_cls_logits=cfg.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS)


def is_trainable(name: str, policy: FreezePolicy) -> bool:
    """Whether the parameter called ``name`` (a full-model key without ``module.``) trains under ``policy``."""
    if name.startswith("module."):
        name = name[len("module."):]
    if name.startswith(PROMPT_OFFSET):
        return True
    if name.startswith("backbone.body."):
        return not policy.freeze_backbone
    if name.startswith("backbone.fpn."):
        return not policy.freeze_fpn
    if name.startswith("language_backbone."):
        return not policy.freeze_language
    if name.startswith("rpn."):
        if policy.freeze_rpn:
            return False
        if policy.freeze_cls_logits and name.startswith("rpn.head.cls_logits."):
            return False
        return not policy.linear_prob or any(key in name for key in LINEAR_PROB_TRAINABLE)
    return True


def trainable_names(names: Iterable[str], policy: FreezePolicy) -> List[str]:
    """The subset of ``names`` that trains under ``policy`` (order kept)."""
    return [n for n in names if is_trainable(n, policy)]


def apply_freeze_policy(model, policy: FreezePolicy) -> List[str]:
    """Set ``requires_grad`` of every parameter of ``model`` from ``policy``; returns the trainable names.

    ``model`` is the (unwrapped) detector. With the prompt offset on, the model must have been built with
    ``ADD_LINEAR_LAYER`` (the offset's existence is a build-time choice).
    """
    if policy.linear_prob and not (policy.freeze_backbone and policy.freeze_fpn):
        raise ValueError("linear probing needs the backbone and the FPN frozen (MODEL.BACKBONE/FPN.FREEZE)")
    if policy.add_linear_layer and getattr(getattr(model, "rpn", None), "tunable_linear", None) is None:
        raise ValueError("the policy trains the prompt offset but the model has no rpn.tunable_linear; build it "
                         "with MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER True")
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad = is_trainable(name, policy)
        if p.requires_grad:
            trainable.append(name)
    return trainable


def apply_tuning_highlevel_override(cfg):
    """Set the freeze flags of ``cfg`` (mutable) from ``cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE``.

    ``None`` or an unknown mode leaves ``cfg`` untouched (as the reference). ``linear_prob``
    also turns off gradient checkpointing of the head. Returns ``cfg``.
    """
    mode = cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE
    if mode not in TUNING_MODES:
        return cfg
    policy = TUNING_MODES[mode]
    cfg.MODEL.BACKBONE.FREEZE = policy.freeze_backbone
    cfg.MODEL.FPN.FREEZE = policy.freeze_fpn
    cfg.MODEL.RPN.FREEZE = policy.freeze_rpn
    cfg.MODEL.LINEAR_PROB = policy.linear_prob
    cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER = policy.add_linear_layer
    cfg.MODEL.LANGUAGE_BACKBONE.FREEZE = policy.freeze_language
    if mode == "linear_prob":
        cfg.MODEL.DYHEAD.USE_CHECKPOINT = False
    return cfg


def freeze_options_summary(cfg) -> str:
    """One line per freeze-related option, for the run log."""
    return "\n".join([
        "Backbone Freeze: {}".format(cfg.MODEL.BACKBONE.FREEZE),
        "FPN Freeze: {}".format(cfg.MODEL.FPN.FREEZE),
        "RPN Freeze: {}".format(cfg.MODEL.RPN.FREEZE),
        "Linear Probe: {}".format(cfg.MODEL.LINEAR_PROB),
        "Language Freeze: {}".format(cfg.MODEL.LANGUAGE_BACKBONE.FREEZE),
        "Linear Layer (prompt tuning): {}".format(cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER),
        "High Level Override: {}".format(cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE),
    ])


__all__ = ["FreezePolicy", "TUNING_MODES", "LINEAR_PROB_TRAINABLE", "policy_from_config", "is_trainable",
           "trainable_names", "apply_freeze_policy", "apply_tuning_highlevel_override", "freeze_options_summary"]
