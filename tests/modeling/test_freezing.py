"""Freeze policies (glip/modeling/freezing.py): which parameters train in every mode, which parts a detector keeps
in eval mode, the config mapping, and the transfer modes against the reference's end-to-end golden."""
import json

import pytest
import torch
from torch import nn
from transformers import BertConfig

from glip.config import cfg as default_cfg
from glip.modeling.detector import GeneralizedVLRCNN
from glip.modeling.freezing import (TUNING_MODES, FreezePolicy, is_trainable, policy_from_config, train_net_policy,
                                    trainable_names)
from glip.modeling.head.rpn import VLDyHeadModule
from glip.modeling.language.bert import BertEncoder, LanguageBackbone
from glip.utils.cli import apply_tuning_highlevel_override
from helpers import REFERENCE

# --- which names train: a hand-made list of GLIP parameter names, the expectations written out per mode ---

NAMES = {
    "body": "backbone.body.layers.0.blocks.0.attn.qkv.weight",
    "fpn": "backbone.fpn.fpn_inner2.weight",
    "bert": "language_backbone.body.model.encoder.layer.0.output.dense.weight",
    "tower": "rpn.head.dyhead_tower.0.b_attn.gamma_v",
    "scale": "rpn.head.scales.0.scale",
    "cls_logits": "rpn.head.cls_logits.weight",
    "bbox_pred": "rpn.head.bbox_pred.weight",
    "centerness": "rpn.head.centerness.bias",
    "log_scale": "rpn.head.log_scale",
    "bias_lang": "rpn.head.bias_lang",
    "bias0": "rpn.head.bias0",
    "projection": "rpn.head.dot_product_projection_text.weight",
    "offset": "rpn.tunable_linear.weight",
}
PROBE = {"bbox_pred", "centerness", "log_scale", "bias_lang", "bias0", "projection"}  # linear probe (cls_logits off)
TRAINS = {
    "full": set(NAMES) - {"cls_logits"},
    "linear_prob": PROBE | {"offset"},
    "language_prompt_v1": {"bert", "offset"},
    "language_prompt_v2": {"offset"},
    "language_prompt_v3": {"bert", "offset"},
    "language_prompt_v4": {"offset"},
}


@pytest.mark.parametrize("mode", sorted(TRAINS))
def test_each_mode_trains_exactly_the_expected_names(mode):
    policy = TUNING_MODES[mode]
    assert set(trainable_names(list(NAMES.values()), policy)) == {NAMES[k] for k in TRAINS[mode]}
    assert all(is_trainable("module." + NAMES[k], policy) for k in TRAINS[mode])  # DDP keys


def test_modes_are_the_reference_flags():
    assert set(TUNING_MODES) == set(TRAINS)
    flags = {m: (p.freeze_backbone, p.freeze_fpn, p.freeze_rpn, p.linear_prob, p.add_linear_layer,
                 p.freeze_language) for m, p in TUNING_MODES.items()}
    assert flags == {  # the reference finetune.py's tuning_highlevel_override
        "full": (False, False, False, False, False, False),
        "linear_prob": (True, True, False, True, False, True),
        "language_prompt_v1": (True, True, True, False, False, False),
        "language_prompt_v2": (True, True, True, False, True, True),
        "language_prompt_v3": (True, True, True, True, False, False),
        "language_prompt_v4": (True, True, True, True, True, True),
    }


def test_cls_logits_train_without_the_dot_product_token_loss():
    policy = FreezePolicy(freeze_cls_logits=False)
    assert set(trainable_names(list(NAMES.values()), policy)) == set(NAMES.values())


def test_linear_probe_needs_frozen_backbone_and_fpn():
    with pytest.raises(ValueError, match="MODEL.LINEAR_PROB"):
        FreezePolicy(linear_prob=True, freeze_backbone=True)
    c = default_cfg.clone()
    c.MODEL.LINEAR_PROB = True
    with pytest.raises(ValueError, match="MODEL.LINEAR_PROB"):
        policy_from_config(c)


@pytest.mark.parametrize("mode", sorted(TRAINS))
def test_policy_from_config_is_the_mode(mode):
    c = default_cfg.clone()
    c.merge_from_list(["SOLVER.TUNING_HIGHLEVEL_OVERRIDE", mode])
    c.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS = True  # as every GLIP config
    assert policy_from_config(apply_tuning_highlevel_override(c)) == TUNING_MODES[mode]


def test_train_net_freezes_the_prompt_offset_with_the_rpn():
    c = default_cfg.clone()
    c.MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER = True
    assert is_trainable(NAMES["offset"], train_net_policy(c))
    c.MODEL.RPN.FREEZE = True
    assert not is_trainable(NAMES["offset"], train_net_policy(c))
    assert is_trainable(NAMES["offset"], policy_from_config(c))  # finetune.py: the offset trains
    c.MODEL.RPN.FREEZE, c.MODEL.LINEAR_PROB, c.MODEL.BACKBONE.FREEZE, c.MODEL.FPN.FREEZE = False, True, True, True
    assert is_trainable(NAMES["offset"], train_net_policy(c))


# --- a tiny detector: requires_grad and eval modes after train() ---


class _Body(nn.Module):
    """A backbone body that, like Swin's FREEZE_CONV_BODY_AT, freezes its own stem in train()."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.norm = nn.BatchNorm2d(4)
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        self.stem.eval()
        self.stem.requires_grad_(False)
        return self


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_logits = nn.Conv2d(4, 2, 1)
        self.bbox_pred = nn.Conv2d(4, 4, 1)
        self.dyhead_tower = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        self.log_scale = nn.Parameter(torch.zeros(()))


class _Tokenizer:
    def __call__(self, captions, max_length, **kwargs):
        ids = torch.tensor([[1, 7, 9, 11, 3] + [0] * (max_length - 5)] * len(captions))
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "special_tokens_mask": (ids < 2).long()}


def tiny_detector(policy: FreezePolicy) -> GeneralizedVLRCNN:
    torch.manual_seed(0)
    backbone = nn.Module()
    backbone.body = _Body()
    backbone.fpn = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, hidden_dropout_prob=0.5)
    language = LanguageBackbone(BertEncoder(config))
    rpn = VLDyHeadModule(_Head(), anchor_generator=nn.Identity(), lang_dim=8, add_linear_layer=True)
    return GeneralizedVLRCNN(backbone, language, _Tokenizer(), rpn, max_query_len=8, freeze_policy=policy)


PARTS = ("backbone.body", "backbone.body.stem", "backbone.fpn", "language_backbone", "language_backbone.body.model",
         "rpn", "rpn.head", "rpn.head.dyhead_tower", "rpn.head.cls_logits", "rpn.tunable_linear")
EVAL_IN_TRAINING = {  # the parts in eval mode after model.train()
    "full": {"backbone.body.stem", "rpn.head.cls_logits"},
    "linear_prob": {"backbone.body", "backbone.body.stem", "backbone.fpn", "language_backbone",
                    "language_backbone.body.model", "rpn.head.cls_logits"},
    "language_prompt_v1": {"backbone.body", "backbone.body.stem", "backbone.fpn", "rpn.head",
                           "rpn.head.dyhead_tower", "rpn.head.cls_logits"},
    "language_prompt_v3": {"backbone.body", "backbone.body.stem", "backbone.fpn", "rpn.head",
                           "rpn.head.dyhead_tower", "rpn.head.cls_logits"},
}
EVAL_IN_TRAINING["language_prompt_v2"] = EVAL_IN_TRAINING["language_prompt_v1"] | {
    "language_backbone", "language_backbone.body.model"}
EVAL_IN_TRAINING["language_prompt_v4"] = EVAL_IN_TRAINING["language_prompt_v2"]


def _in_eval(model):
    return {path for path in PARTS if not model.get_submodule(path).training}


@pytest.mark.parametrize("mode", sorted(EVAL_IN_TRAINING))
def test_train_keeps_the_frozen_parts_in_eval_mode(mode):
    model = tiny_detector(TUNING_MODES[mode])
    assert _in_eval(model.eval().train()) == EVAL_IN_TRAINING[mode]
    assert model.training and model.rpn.training  # the RPN computes losses while its head is frozen
    assert _in_eval(model.eval()) == set(PARTS)


@pytest.mark.parametrize("mode", sorted(TRAINS))
def test_set_freeze_policy_sets_requires_grad_and_keeps_structural_freezing(mode):
    model = tiny_detector(TUNING_MODES["full"])
    trainable = model.set_freeze_policy(TUNING_MODES[mode])
    assert trainable == [n for n, p in model.named_parameters() if p.requires_grad]
    assert set(trainable) == set(trainable_names([n for n, _ in model.named_parameters()], TUNING_MODES[mode])) - {
        "backbone.body.stem.weight", "backbone.body.stem.bias"}
    assert "rpn.tunable_linear.weight" in trainable
    assert model.freeze_policy == TUNING_MODES[mode]
    assert _in_eval(model.train()) == EVAL_IN_TRAINING[mode]


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_language_backbone_runs_without_dropout_or_gradients(frozen):
    model = tiny_detector(FreezePolicy(freeze_language=frozen)).train()
    first, second = (model.encode_text(["a cat"], "cpu")["hidden"] for _ in range(2))
    assert torch.equal(first, second) is frozen  # dropout 0.5 is on only when the language backbone trains
    assert first.requires_grad is not frozen
    assert model.freeze_language_backbone is frozen


def test_policy_needing_the_prompt_offset_refuses_a_model_without_it():
    model = tiny_detector(FreezePolicy())
    model.rpn.tunable_linear = None  # a model built without ADD_LINEAR_LAYER
    with pytest.raises(ValueError, match="ADD_LINEAR_LAYER"):
        model.set_freeze_policy(TUNING_MODES["language_prompt_v2"])


# --- against the reference's end-to-end golden (GLIP-T, tools/finetune.py, 2 iterations) ---


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


def test_rules_per_part():
    v1, lp = TUNING_MODES["language_prompt_v1"], TUNING_MODES["linear_prob"]
    assert is_trainable("module.language_backbone.body.model.encoder.layer.0.output.dense.weight", v1)
    assert not is_trainable("rpn.head.bbox_pred.weight", v1)
    assert is_trainable("rpn.head.bbox_pred.weight", lp) and is_trainable("rpn.head.log_scale", lp)
    assert not is_trainable("rpn.head.dyhead_tower.0.b_attn.gamma_v", lp)
    assert not is_trainable("rpn.head.cls_logits.weight", TUNING_MODES["full"])
    assert not is_trainable("backbone.fpn.fpn_inner2.weight", lp)
