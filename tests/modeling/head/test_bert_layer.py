"""BertEncoderLayer (dyhead tower[1]) against modules/bert_encoder_layer.pt and HF's BertLayer."""
import json

import pytest
import torch
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer
from yacs.config import CfgNode

from glip.modeling.head.bert_layer import BertEncoderLayer, build_bert_encoder_layer
from glip.modeling.language.bert import load_bert_config
from helpers import REFERENCE, load_golden
from helpers.weights import fill_

PREFIX = "rpn.head.dyhead_tower.1."


@pytest.fixture(scope="module")
def cfg():
    with open(REFERENCE / "config_glip_tiny_test.yaml") as f:
        return CfgNode.load_cfg(f)


def test_matches_reference(cfg):
    golden = load_golden("modules/bert_encoder_layer.pt")
    layer = fill_(build_bert_encoder_layer(cfg, load_bert_config(cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE)),
                  prefix=PREFIX).eval()
    lang = {"hidden": golden["inputs"]["hidden"], "masks": golden["inputs"]["masks"]}
    visual = [torch.zeros(1)]
    with torch.no_grad():
        out = layer({"visual": visual, "lang": lang})
    torch.testing.assert_close(out["lang"]["hidden"], golden["outputs"]["hidden"], rtol=0, atol=1e-5)
    assert out["visual"] is visual and out["lang"]["masks"] is lang["masks"]
    assert lang["hidden"] is golden["inputs"]["hidden"]  # the caller's dict is not modified


def test_keys_and_options_from_config(cfg):
    layer = build_bert_encoder_layer(cfg, load_bert_config(cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE))
    keys = json.loads((REFERENCE / "state_dict_glip_tiny.json").read_text())["keys"]
    expected = {k[len("module." + PREFIX):]: tuple(v["shape"]) for k, v in keys.items()
                if k.startswith("module." + PREFIX)}
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == expected
    attn = layer.attention.self
    assert attn.clamp_min_for_underflow and attn.clamp_max_for_overflow
    assert attn.num_heads == 12 and attn.head_dim == 64
    assert all(m.p == pytest.approx(0.1) for m in layer.modules() if isinstance(m, torch.nn.Dropout))


def _tiny_pair():
    config = BertConfig(hidden_size=16, num_attention_heads=4, intermediate_size=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    ours = BertEncoderLayer(hidden_size=16, num_attention_heads=4, intermediate_size=32, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, clamp_min_for_underflow=True,
                            clamp_max_for_overflow=True).eval()
    hf = BertLayer(config).eval()
    hf.load_state_dict(ours.state_dict())
    return ours, hf


def test_equals_hf_bert_layer_when_clamps_are_inactive():
    ours, hf = _tiny_pair()
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        ref = hf(hidden, attention_mask=extended)[0]
        out = ours({"visual": None, "lang": {"hidden": hidden, "masks": mask}})["lang"]["hidden"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_score_clamp_applies_before_the_mask():
    ours, _ = _tiny_pair()
    attn = ours.attention.self
    hidden = torch.rand(1, 3, 16) + 0.5  # positive, so every raw score is far above +50000
    extended = (1.0 - torch.tensor([[1.0, 1.0, 0.0]])[:, None, None, :]) * torch.finfo(torch.float32).min
    with torch.no_grad():
        attn.query.weight.fill_(1e3)
        attn.key.weight.fill_(1e3)
        out = attn(hidden, extended)
        values = attn._heads(attn.value(hidden))  # (1, heads, T, head_dim)
    # all valid scores clamp to 50000: uniform weights over the two valid tokens, none on the masked one
    expected = values[:, :, :2].mean(2, keepdim=True).expand(-1, -1, 3, -1).permute(0, 2, 1, 3).reshape(1, 3, 16)
    torch.testing.assert_close(out, expected)


def test_feed_forward_clamps():
    ours, _ = _tiny_pair()
    hidden = torch.rand(1, 3, 16) + 0.5
    with torch.no_grad():
        ours.intermediate.dense.weight.fill_(1e6)
        ours.intermediate.dense.weight[1::2] *= -1
        inter = ours.intermediate(hidden)
        ours.output.LayerNorm.weight.fill_(1e6)
        out = ours.output(inter, hidden)
    assert (inter[..., 0::2] == 50000).all() and (inter[..., 1::2] == 0).all()  # gelu(-50000) = -0
    assert out.abs().max() == 50000
