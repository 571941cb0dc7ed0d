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


# --- freeze policies against the reference's end-to-end golden (GLIP-T, tools/finetune.py, 2 iterations) ---
import json  # noqa: E402

import torch  # noqa: E402

from glip.config.tuning import TUNING_MODES, is_trainable, policy_from_config, trainable_names  # noqa: E402
from helpers import REFERENCE  # noqa: E402


def _golden_modes():
    return torch.load(REFERENCE / "end_to_end" / "golden" / "finetune_modes.pt", weights_only=False)["modes"]


def _glip_t_parameters():
    keys = json.loads((REFERENCE / "state_dict_glip_tiny.json").read_text())["keys"]
    return [k[len("module."):] for k, v in keys.items() if v["kind"] == "parameter"]


def test_full_policy_matches_the_tensors_the_reference_trained():
    params = _glip_t_parameters()
    changed = set(_golden_modes()["full"]["changed"])
    trainable = set(trainable_names(params, TUNING_MODES["full"]))
    assert changed <= trainable
    # Trainable but unchanged in the golden: only the FPN-level scales 1-4 (no positive anchor there in 2 steps).
    assert {k.rsplit(".", 2)[0] for k in trainable - changed} == {"rpn.head.scales"}
    assert set(params) - trainable == {"rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias"}


def test_language_prompt_v2_trains_only_the_new_prompt_offset():
    golden = _golden_modes()["language_prompt_v2"]
    assert golden["changed"] == [] and list(golden["new_keys"]) == ["rpn.tunable_linear.weight"]
    policy = TUNING_MODES["language_prompt_v2"]
    assert trainable_names(_glip_t_parameters(), policy) == []
    assert is_trainable("rpn.tunable_linear.weight", policy)
    assert golden["new_keys"]["rpn.tunable_linear.weight"]["shape"] == (1000, 768)


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_policy_from_config_is_the_mode(mode):
    c = cfg.clone()
    c.merge_from_list(["SOLVER.TUNING_HIGHLEVEL_OVERRIDE", mode])
    c.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS = True  # as every GLIP config
    assert policy_from_config(apply_tuning_highlevel_override(c)) == TUNING_MODES[mode]


def test_rules_per_part():
    v1, lp = TUNING_MODES["language_prompt_v1"], TUNING_MODES["linear_prob"]
    assert is_trainable("module.language_backbone.body.model.encoder.layer.0.output.dense.weight", v1)
    assert not is_trainable("rpn.head.bbox_pred.weight", v1)
    assert is_trainable("rpn.head.bbox_pred.weight", lp) and is_trainable("rpn.head.log_scale", lp)
    assert not is_trainable("rpn.head.dyhead_tower.0.b_attn.gamma_v", lp)
    assert not is_trainable("rpn.head.cls_logits.weight", TUNING_MODES["full"])
    assert not is_trainable("backbone.fpn.fpn_inner2.weight", lp)
