"""Which parameters of GLIP train and which of its parts stay in eval mode: one :class:`FreezePolicy`.

Every path goes through this module: the model build (``MODEL.{BACKBONE,FPN,RPN,LANGUAGE_BACKBONE}.FREEZE``,
``MODEL.LINEAR_PROB``, the ``cls_logits`` freeze under the dot-product token loss), ``train_net.py``, and the
transfer modes of ``finetune.py`` (``SOLVER.TUNING_HIGHLEVEL_OVERRIDE``), including the prompt offset
``rpn.tunable_linear``. The detector holds its policy (``GeneralizedVLRCNN.set_freeze_policy``) and its
``train()`` keeps the frozen parts in eval mode with :func:`keep_frozen_in_eval`.

A policy is a table of parameter-name patterns (:func:`rules`, glob syntax, the first match decides, no match
trains). The transfer modes (:data:`TUNING_MODES`), with the prompt offset trained whenever the model has one:

=====================  ==========================================================================
mode                   trains (rpn.head.cls_logits.* is frozen in every mode)
=====================  ==========================================================================
full                   *
linear_prob            rpn.*<k>* for k in LINEAR_PROB_TRAINABLE
language_prompt_v1     language_backbone.*
language_prompt_v2     rpn.tunable_linear.* only
language_prompt_v3     language_backbone.*   (linear probe on, but inside a frozen RPN)
language_prompt_v4     rpn.tunable_linear.* only
=====================  ==========================================================================

Eval mode (:data:`EVAL_PARTS`): a frozen backbone body, FPN or language backbone, the RPN's ``head`` under a
frozen RPN, and ``rpn.head.cls_logits`` when it is frozen. So a frozen BERT runs without dropout, as the
reference's ``train()`` and trainer do. The config mapping is at the end (:func:`policy_from_config`,
:func:`train_net_policy`); writing a mode into the config flags is the tools' business
(``glip.utils.cli.apply_tuning_highlevel_override``).
"""
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Iterable, List, Tuple

if TYPE_CHECKING:  # the policy itself needs no torch (the tools read TUNING_MODES before importing it)
    from torch import nn

# Substrings of the RPN parameter names that stay trainable under MODEL.LINEAR_PROB (the reference's list).
LINEAR_PROB_TRAINABLE = ("bbox_pred", "cls_logits", "centerness", "cosine_scale", "dot_product_projection_text",
                         "head.log_scale", "head.bias_lang", "head.bias0")
# The prompt-tuning offset (MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER), (1000, lang_dim).
PROMPT_OFFSET = "rpn.tunable_linear."


@dataclass(frozen=True)
class FreezePolicy:
    """Which parts of GLIP are frozen; the comments name the config key each field comes from."""
    freeze_backbone: bool = False     # MODEL.BACKBONE.FREEZE: backbone.body
    freeze_fpn: bool = False          # MODEL.FPN.FREEZE: backbone.fpn
    freeze_rpn: bool = False          # MODEL.RPN.FREEZE: rpn.* except the prompt offset
    linear_prob: bool = False         # MODEL.LINEAR_PROB: in the RPN only LINEAR_PROB_TRAINABLE
    add_linear_layer: bool = False    # MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER: the model has the prompt offset
    freeze_language: bool = False     # MODEL.LANGUAGE_BACKBONE.FREEZE: language_backbone.*
    freeze_cls_logits: bool = True    # MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS: rpn.head.cls_logits
    freeze_offset: bool = False       # the prompt offset too (train_net.py under MODEL.RPN.FREEZE; a loaded prompt)

    def __post_init__(self):
        if self.linear_prob and not (self.freeze_backbone and self.freeze_fpn):
            raise ValueError("MODEL.LINEAR_PROB needs MODEL.BACKBONE.FREEZE and MODEL.FPN.FREEZE set to True")


TUNING_MODES = {
    "full": FreezePolicy(),
    "linear_prob": FreezePolicy(freeze_backbone=True, freeze_fpn=True, linear_prob=True, freeze_language=True),
    "language_prompt_v1": FreezePolicy(freeze_backbone=True, freeze_fpn=True, freeze_rpn=True),
    "language_prompt_v2": FreezePolicy(freeze_backbone=True, freeze_fpn=True, freeze_rpn=True,
                                       add_linear_layer=True, freeze_language=True),
    "language_prompt_v3": FreezePolicy(freeze_backbone=True, freeze_fpn=True, freeze_rpn=True, linear_prob=True),
    "language_prompt_v4": FreezePolicy(freeze_backbone=True, freeze_fpn=True, freeze_rpn=True, linear_prob=True,
                                       add_linear_layer=True, freeze_language=True),
}

# Submodules kept in eval mode by the detector's train(): (policy field, dotted path).
EVAL_PARTS = (("freeze_backbone", "backbone.body"), ("freeze_fpn", "backbone.fpn"), ("freeze_rpn", "rpn.head"),
              ("freeze_cls_logits", "rpn.head.cls_logits"), ("freeze_language", "language_backbone"))


def rules(policy: FreezePolicy) -> Tuple[Tuple[str, bool], ...]:
    """The ordered ``(glob pattern over parameter names, trains)`` table of ``policy``."""
    table = [(PROMPT_OFFSET + "*", not policy.freeze_offset),
             ("backbone.body.*", not policy.freeze_backbone),
             ("backbone.fpn.*", not policy.freeze_fpn),
             ("language_backbone.*", not policy.freeze_language)]
    if policy.freeze_rpn:
        table.append(("rpn.*", False))
    if policy.freeze_cls_logits:
        table.append(("rpn.head.cls_logits.*", False))
    if policy.linear_prob:
        table += [("rpn.*{}*".format(key), True) for key in LINEAR_PROB_TRAINABLE] + [("rpn.*", False)]
    return tuple(table)


def _trains(key: str, table) -> bool:
    for pattern, trains in table:
        if fnmatchcase(key, pattern):
            return trains
    return True


def is_trainable(name: str, policy: FreezePolicy) -> bool:
    """Whether the parameter ``name`` (a full-model key, ``module.`` allowed) trains under ``policy``."""
    return _trains(name[len("module."):] if name.startswith("module.") else name, rules(policy))


def trainable_names(names: Iterable[str], policy: FreezePolicy) -> List[str]:
    """The subset of ``names`` that trains under ``policy`` (order kept)."""
    table = rules(policy)
    return [n for n in names if _trains(n[len("module."):] if n.startswith("module.") else n, table)]


def apply_freeze_policy(model: "nn.Module", policy: FreezePolicy) -> List[str]:
    """Set ``requires_grad`` of every parameter of ``model`` (the unwrapped detector) from ``policy``.

    Returns the trainable names. A policy with the prompt offset needs a model that has ``rpn.tunable_linear``
    (built with ``ADD_LINEAR_LAYER``). Parts with their own structural freezing (Swin's
    ``FREEZE_CONV_BODY_AT`` stages) re-apply it in their ``train()``: call ``model.train(model.training)`` after
    this (``GeneralizedVLRCNN.set_freeze_policy`` does).
    """
    named = list(model.named_parameters())
    if policy.add_linear_layer and not any(n.startswith(PROMPT_OFFSET) for n, _ in named):
        raise ValueError("the policy trains the prompt offset but the model has no rpn.tunable_linear; build it "
                         "with MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER True")
    trainable = set(trainable_names([n for n, _ in named], policy))
    for name, p in named:
        p.requires_grad = name in trainable
    return [n for n, _ in named if n in trainable]


def frozen_parts(model: "nn.Module", policy: FreezePolicy) -> List[str]:
    """Dotted paths of the submodules of ``model`` that ``policy`` keeps in eval mode (parts it lacks skipped)."""
    paths = []
    for field, path in EVAL_PARTS:
        if getattr(policy, field):
            try:
                model.get_submodule(path)
            except AttributeError:
                continue  # no such part: it has no parameters to freeze either
            paths.append(path)
    return paths


def keep_frozen_in_eval(model: "nn.Module", policy: FreezePolicy) -> None:
    """Put the frozen parts of ``model`` in eval mode (their normalisation and dropout stay fixed)."""
    for path in frozen_parts(model, policy):
        model.get_submodule(path).eval()


def policy_from_config(cfg) -> FreezePolicy:
    """The policy the individual flags of ``cfg`` describe (after any high-level override), as the model build
    and ``finetune.py`` apply them: the prompt offset trains whenever the model has one."""
    return FreezePolicy(
        freeze_backbone=cfg.MODEL.BACKBONE.FREEZE, freeze_fpn=cfg.MODEL.FPN.FREEZE, freeze_rpn=cfg.MODEL.RPN.FREEZE,
        linear_prob=cfg.MODEL.LINEAR_PROB, add_linear_layer=cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER,
        freeze_language=cfg.MODEL.LANGUAGE_BACKBONE.FREEZE,
        freeze_cls_logits=cfg.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS)


def train_net_policy(cfg) -> FreezePolicy:
    """:func:`policy_from_config` as ``train_net.py`` applies it: ``MODEL.RPN.FREEZE`` freezes the whole RPN,
    the prompt offset included (the reference freezes ``model.rpn`` before building the optimizer)."""
    policy = policy_from_config(cfg)
    return replace(policy, freeze_offset=policy.freeze_rpn)


__all__ = ["FreezePolicy", "TUNING_MODES", "LINEAR_PROB_TRAINABLE", "PROMPT_OFFSET", "EVAL_PARTS", "rules",
           "is_trainable", "trainable_names", "apply_freeze_policy", "frozen_parts", "keep_frozen_in_eval",
           "policy_from_config", "train_net_policy"]
