"""SOLVER.TUNING_HIGHLEVEL_OVERRIDE expansion into the individual freeze flags."""
import pytest

from glip.config import cfg
from glip.config.tuning import apply_tuning_highlevel_override, freeze_options_summary

# mode -> (backbone, fpn, rpn, linear_prob, add_linear_layer, language) frozen/on, from the reference tool.
EXPECTED = {
    "full": (False, False, False, False, False, False),
    "linear_prob": (True, True, False, True, False, True),
    "language_prompt_v1": (True, True, True, False, False, False),
    "language_prompt_v2": (True, True, True, False, True, True),
    "language_prompt_v3": (True, True, True, True, False, False),
    "language_prompt_v4": (True, True, True, True, True, True),
}


def _flags(c):
    return (c.MODEL.BACKBONE.FREEZE, c.MODEL.FPN.FREEZE, c.MODEL.RPN.FREEZE, c.MODEL.LINEAR_PROB,
            c.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER, c.MODEL.LANGUAGE_BACKBONE.FREEZE)


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_mode_sets_the_freeze_flags(mode):
    c = cfg.clone()
    # Start from the opposite of every expected flag so each one must be written.
    c.MODEL.BACKBONE.FREEZE, c.MODEL.FPN.FREEZE, c.MODEL.RPN.FREEZE = [not f for f in EXPECTED[mode][:3]]
    c.MODEL.LINEAR_PROB = not EXPECTED[mode][3]
    c.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER = not EXPECTED[mode][4]
    c.MODEL.LANGUAGE_BACKBONE.FREEZE = not EXPECTED[mode][5]
    c.MODEL.DYHEAD.USE_CHECKPOINT = True
    c.merge_from_list(["SOLVER.TUNING_HIGHLEVEL_OVERRIDE", mode])
    assert apply_tuning_highlevel_override(c) is c
    assert _flags(c) == EXPECTED[mode]
    assert c.MODEL.DYHEAD.USE_CHECKPOINT is (mode != "linear_prob")
    assert "High Level Override: {}".format(mode) in freeze_options_summary(c)


def test_no_mode_leaves_config_untouched():
    c = cfg.clone()
    c.MODEL.BACKBONE.FREEZE = True
    before = c.dump()
    apply_tuning_highlevel_override(c)
    assert c.dump() == before
