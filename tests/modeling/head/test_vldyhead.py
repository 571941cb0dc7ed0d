"""VLDyHead: the `trim_padded_tokens` speed option keeps every output of the valid tokens and the visual side."""
import torch

from glip.modeling.head.bert_layer import BertEncoderLayer
from glip.modeling.head.dyconv import DyConv
from glip.modeling.head.fusion import VLFuse
from glip.modeling.head.vldyhead import VLDyHead

SIZES = [(6, 8), (3, 4), (2, 2), (1, 1), (1, 1)]


def _small_head():
    torch.manual_seed(0)
    tower = []
    for _ in range(2):
        tower += [VLFuse(visual_dim=16, lang_dim=32, embed_dim=32, num_heads=2, clamp_min_for_underflow=True,
                         clamp_max_for_overflow=True),
                  BertEncoderLayer(hidden_size=32, num_attention_heads=2, intermediate_size=64),
                  DyConv(16, 16, use_dyfuse=True, use_dyrelu=True, use_deform=True, bn_type=("gn", 4))]
    head = VLDyHead(tower, channels=16, num_classes=3, lang_dim=32, log_scale=-1.0).eval()
    with torch.no_grad():
        for p in head.parameters():  # non-trivial values everywhere (offsets, layer-scales, biases)
            p.add_(0.05 * torch.randn_like(p))
    return head


def test_trim_padded_tokens_keeps_valid_outputs():
    head = _small_head()
    features = [torch.randn(2, 16, h, w) for h, w in SIZES]
    masks = torch.tensor([[1] * 7 + [0] * 5, [1] * 4 + [0] * 8])
    hidden = torch.randn(2, 12, 32)
    language = {"hidden": hidden, "masks": masks, "embedded": hidden * masks[..., None],
                "aggregate": hidden.mean(1)}
    with torch.no_grad():
        full = head(features, dict(language), language["embedded"])
        head.trim_padded_tokens = True
        trimmed = head(features, dict(language), language["embedded"])
    keep = 7  # last valid token of the batch + 1
    for got, ref in zip(trimmed["dot_product_logits"], full["dot_product_logits"]):
        assert got.shape == ref.shape
        torch.testing.assert_close(got[..., :keep], ref[..., :keep], rtol=1e-5, atol=1e-5)
        assert (got[..., keep:] == head.PADDED_TOKEN_LOGIT).all()
    for key in ("box_regression", "centerness", "fused_visual"):
        for got, ref in zip(trimmed[key], full[key]):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trimmed["lang"]["hidden"][:, :keep], full["lang"]["hidden"][:, :keep],
                               rtol=1e-5, atol=1e-5)
    assert (trimmed["lang"]["hidden"][:, keep:] == 0).all()
    assert trimmed["lang"]["masks"] is masks


def test_trim_is_off_by_default_and_in_training():
    head = _small_head()
    assert head.trim_padded_tokens is False
    head.trim_padded_tokens = True
    masks = torch.tensor([[1, 1, 0, 0]])
    assert head._trimmed_length({"masks": masks}) == 2
    head.train()
    assert head._trimmed_length({"masks": masks}) is None
