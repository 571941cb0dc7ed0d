"""Swin-T + FPN with the golden weight fill reproduces the reference's P3-P7 features."""
import json

import pytest
import torch

from glip.modeling.backbone.backbone_with_fpn import BackboneWithFPN
from glip.modeling.backbone.fpn import FPN, LastLevelP6P7
from glip.modeling.backbone.swin import SwinTransformer
from helpers import REFERENCE, load_golden
from helpers.weights import fill_


def glip_tiny_backbone(**swin_kw):
    body = SwinTransformer(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                           drop_path_rate=0.2, **swin_kw)
    fpn = FPN([0, 192, 384, 768], 256, top_blocks=LastLevelP6P7(256, 256))
    return BackboneWithFPN(body, fpn, out_channels=256)


@pytest.fixture(scope="module")
def filled_tiny():
    return fill_(glip_tiny_backbone(), prefix="backbone.").eval()


def test_fill_matches_reference_checksums(filled_tiny):
    sums = json.loads((REFERENCE / "fill_checksums_glip_tiny.json").read_text())["per_key"]
    state = filled_tiny.state_dict()
    checked = 0
    for key, value in state.items():
        ref = sums.get("backbone." + key)
        if ref is None:
            assert key.endswith("relative_position_index"), key
            continue
        assert value.double().sum().item() == pytest.approx(ref["sum"], rel=1e-9, abs=1e-9), key
        assert value.flatten()[:3].tolist() == ref["first"], key
        checked += 1
    assert checked == sum(1 for k in sums if k.startswith("backbone."))


@pytest.mark.parametrize("image", ["astronaut", "chelsea"])
def test_golden_fpn_features(filled_tiny, image):
    golden = load_golden(f"infer_{image}_320.pt")["size320"]
    with torch.no_grad():
        outs = filled_tiny(golden["input_tensor"])
    assert len(outs) == 5
    for level, (got, want) in enumerate(zip(outs, golden["fpn_features"])):
        assert got.shape == want.shape, level
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4, msg=f"P{level + 3}")


def test_odd_input_size_levels(filled_tiny):
    h, w = 100, 148
    with torch.no_grad():
        outs = filled_tiny(torch.randn(1, 3, h, w))
    assert [tuple(o.shape) for o in outs] == [(1, 256, -(-h // s), -(-w // s)) for s in (8, 16, 32, 64, 128)]


def test_train_mode_with_zeroed_stochastic_layers_equals_eval(filled_tiny):
    model = glip_tiny_backbone()
    model.load_state_dict(filled_tiny.state_dict())
    model.fpn.drop_block = None
    model.train()
    for m in model.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = model(x)
        want = filled_tiny(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
