"""The head's optional parts: contrastive-align logits and the resizer by hand, shallow / MLM outputs, and the
combinations refused by name because the reference cannot run them."""
import pytest
import torch
import torch.nn.functional as F
from helpers.tiny import tiny_glip_config
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLMPredictionHead

from glip.modeling.head.feature_resizer import FeatureResizer
from glip.modeling.head.head_options import check_head_options, text_embedding_width
from glip.modeling.head.vldyhead import VLDyHead

SIZES = [(3, 4), (2, 2)]
FUSE = "MODEL.DYHEAD.FUSE_CONFIG."


def _head(**kwargs):
    torch.manual_seed(0)
    head = VLDyHead([], channels=4, num_classes=3, lang_dim=6, num_levels=2, log_scale=0.3, **kwargs)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return head


def test_contrastive_logits_by_hand():
    head = _head(use_dot_product=False, use_contrastive_align=True, contrastive_dim=5)
    visual = [torch.randn(2, 4, h, w) for h, w in SIZES]
    text = torch.randn(2, 7, 4)
    out = head.predict(visual, text)
    w_t, b_t = head.contrastive_align_projection_text.weight, head.contrastive_align_projection_text.bias
    tokens = text @ w_t.t() + b_t
    tokens = tokens / tokens.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(out["proj_tokens"], tokens)
    conv = head.contrastive_align_projection_image
    for level, x in enumerate(visual):
        for b in range(2):
            for y in range(x.shape[2]):
                for xx in range(x.shape[3]):
                    q = conv.weight[:, :, 0, 0] @ x[b, :, y, xx] + conv.bias
                    q = q / q.norm()
                    expected = (tokens[b] @ q) / torch.exp(head.log_scale)
                    row = y * x.shape[3] + xx
                    torch.testing.assert_close(out["contrastive_logits"][level][b, row], expected,
                                               rtol=1e-5, atol=1e-5)
    assert out["dot_product_logits"] is None and out["mlm_logits"] is None


def test_feature_resizer_by_hand():
    torch.manual_seed(0)
    resizer = FeatureResizer(6, 4, dropout=0.5).eval()
    x = torch.randn(2, 3, 6)
    y = x @ resizer.fc.weight.t() + resizer.fc.bias
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + 1e-12)
    torch.testing.assert_close(resizer(x), y * resizer.layer_norm.weight + resizer.layer_norm.bias)
    assert sorted(k for k in resizer.state_dict()) == ["fc.bias", "fc.weight", "layer_norm.bias",
                                                       "layer_norm.weight"]
    plain = FeatureResizer(6, 4, 0.1, do_ln=False).eval()
    torch.testing.assert_close(plain(x), x @ plain.fc.weight.t() + plain.fc.bias)


def test_mlm_logits_in_training_only_and_shallow_outputs():
    config = BertConfig(hidden_size=6, vocab_size=11, num_attention_heads=1, intermediate_size=8)
    head = _head(mlm_head=BertLMPredictionHead(config), use_shallow_contrastive=True)
    visual = [torch.randn(1, 4, h, w) for h, w in SIZES]
    text = torch.randn(1, 5, 6)
    head.train()
    out = head.predict(visual, text)
    torch.testing.assert_close(out["mlm_logits"], head.mlm_head(text))
    torch.testing.assert_close(out["shallow_text_emb"], F.normalize(text, dim=-1))
    head.eval()
    assert head.predict(visual, text)["mlm_logits"] is None
    language = {"hidden": text, "masks": torch.ones(1, 5), "embedded": text}
    full = head(visual, language, text)
    assert [tuple(f.shape) for f in full["shallow_img_emb_feats"]] == [(1, 12, 4), (1, 4, 4)]
    torch.testing.assert_close(full["shallow_img_emb_feats"][0][0, 5], visual[0][0, :, 1, 1])
    with pytest.raises(ValueError, match="shallow"):
        VLDyHead([], channels=4, num_classes=3, lang_dim=6, use_dot_product=False, use_shallow_contrastive=True)


# ------------------------------------------------------------------------------------------------- refusals
def _cfg(*opts):
    return tiny_glip_config(*opts)


CONTRASTIVE_ONLY = [FUSE + "USE_CONTRASTIVE_ALIGN_LOSS", True, FUSE + "USE_DOT_PRODUCT_TOKEN_LOSS", False,
                    FUSE + "EARLY_FUSE_ON", False, FUSE + "USE_FUSED_FEATURES_DOT_PRODUCT", False]


def test_runnable_combinations_pass():
    check_head_options(_cfg(), 768)                                     # GLIP-T
    check_head_options(_cfg(FUSE + "MLM_LOSS", True), 768)
    check_head_options(_cfg(FUSE + "USE_TOKEN_LOSS", True, FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS", True), 768)
    check_head_options(_cfg(*CONTRASTIVE_ONLY), 768)
    assert text_embedding_width(_cfg(*CONTRASTIVE_ONLY), 768) == 256
    assert text_embedding_width(_cfg(), 768) == 768


@pytest.mark.parametrize("opts,names", [
    ([FUSE + "USE_CONTRASTIVE_ALIGN_LOSS", True], ["USE_CONTRASTIVE_ALIGN_LOSS", "USE_DOT_PRODUCT_TOKEN_LOSS"]),
    ([FUSE + "USE_DOT_PRODUCT_TOKEN_LOSS", False], ["EARLY_FUSE_ON", "USE_DOT_PRODUCT_TOKEN_LOSS"]),
    (CONTRASTIVE_ONLY[:-1] + [True], ["USE_CONTRASTIVE_ALIGN_LOSS", "CHANNELS"]),
    (CONTRASTIVE_ONLY + [FUSE + "MLM_LOSS", True], ["MLM_LOSS", "JOINT_EMB_SIZE"]),
    (CONTRASTIVE_ONLY + [FUSE + "ADD_LINEAR_LAYER", True], ["ADD_LINEAR_LAYER"]),
    ([FUSE + "USE_DOT_PRODUCT_TOKEN_LOSS", False, FUSE + "EARLY_FUSE_ON", False, FUSE + "MLM_LOSS", True,
      FUSE + "USE_FUSED_FEATURES_DOT_PRODUCT", False], ["MLM_LOSS", "needs text features"]),
    ([FUSE + "USE_TOKEN_LOSS", True, "MODEL.LANGUAGE_BACKBONE.PAD_MAX", False], ["USE_TOKEN_LOSS", "PAD_MAX"]),
    ([FUSE + "USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS", True], ["USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS", "VL Swin"]),
    ([FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS", True, "MODEL.LANGUAGE_BACKBONE.PAD_MAX", False],
     ["USE_SHALLOW_CONTRASTIVE_LOSS", "PAD_MAX"]),
    (CONTRASTIVE_ONLY + [FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS", True],
     ["USE_SHALLOW_CONTRASTIVE_LOSS", "USE_DOT_PRODUCT_TOKEN_LOSS"]),
])
def test_combinations_the_reference_cannot_run_are_refused_by_name(opts, names):
    with pytest.raises(NotImplementedError) as err:
        check_head_options(_cfg(*opts), 768)
    for name in names:
        assert name in str(err.value)


def test_build_refuses_before_building():
    from glip.modeling.detector import build_detection_model
    from glip.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS"):
        build_detection_model(_cfg(FUSE + "USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS", True))


def test_the_tools_check_without_the_language_model_skips_only_the_width_checks():
    """The tools' audit (glip.utils.cli.audit) runs before the language model is known: hidden_size None."""
    from glip.utils.errors import ConfigError

    check_head_options(_cfg(*CONTRASTIVE_ONLY[:-1] + [True]))          # a width problem: the builder's to find
    with pytest.raises(ConfigError, match="USE_CONTRASTIVE_ALIGN_LOSS and USE_DOT_PRODUCT_TOKEN_LOSS"):
        check_head_options(_cfg(FUSE + "USE_CONTRASTIVE_ALIGN_LOSS", True))
    with pytest.raises(ConfigError, match="USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS"):
        check_head_options(_cfg(FUSE + "USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS", True))
