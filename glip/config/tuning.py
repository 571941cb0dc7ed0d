"""High-level transfer modes (``SOLVER.TUNING_HIGHLEVEL_OVERRIDE``) expanded into freeze flags.

``finetune.py`` lets one key pick a whole transfer recipe; this module turns it into the
individual ``*.FREEZE`` / ``LINEAR_PROB`` / ``ADD_LINEAR_LAYER`` settings, exactly as the
reference does, so the model builder only ever reads the individual flags.
"""

# mode -> (BACKBONE.FREEZE, FPN.FREEZE, RPN.FREEZE, LINEAR_PROB, FUSE_CONFIG.ADD_LINEAR_LAYER,
#          LANGUAGE_BACKBONE.FREEZE)
TUNING_MODES = {
    "full": (False, False, False, False, False, False),
    "linear_prob": (True, True, False, True, False, True),
    "language_prompt_v1": (True, True, True, False, False, False),
    "language_prompt_v2": (True, True, True, False, True, True),
    "language_prompt_v3": (True, True, True, True, False, False),
    "language_prompt_v4": (True, True, True, True, True, True),
}


def apply_tuning_highlevel_override(cfg):
    """Set the freeze flags of ``cfg`` (mutable) from ``cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE``.

    ``None`` or an unknown mode leaves ``cfg`` untouched (as the reference). ``linear_prob``
    also turns off gradient checkpointing of the head. Returns ``cfg``.
    """
    mode = cfg.SOLVER.TUNING_HIGHLEVEL_OVERRIDE
    if mode not in TUNING_MODES:
        return cfg
    backbone, fpn, rpn, linear_prob, add_linear, language = TUNING_MODES[mode]
    cfg.MODEL.BACKBONE.FREEZE = backbone
    cfg.MODEL.FPN.FREEZE = fpn
    cfg.MODEL.RPN.FREEZE = rpn
    cfg.MODEL.LINEAR_PROB = linear_prob
    cfg.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER = add_linear
    cfg.MODEL.LANGUAGE_BACKBONE.FREEZE = language
    if mode == "linear_prob":
        cfg.MODEL.DYHEAD.USE_CHECKPOINT = False
    return cfg


def freeze_options_summary(cfg):
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
