"""VLFuse / BiAttentionBlockForCheckpoint / BiMultiHeadAttention against modules/vlfuse_bi_attention.pt."""
import json

import pytest
import torch
from yacs.config import CfgNode

from glip.modeling.head.fusion import BiAttentionBlockForCheckpoint, BiMultiHeadAttention, VLFuse, build_vlfuse
from helpers import REFERENCE, load_golden
from helpers.weights import fill_

PREFIX = "rpn.head.dyhead_tower.0."
ATOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return load_golden("modules/vlfuse_bi_attention.pt")


@pytest.fixture(scope="module")
def cfg():
    with open(REFERENCE / "config_glip_tiny_test.yaml") as f:
        return CfgNode.load_cfg(f)


@pytest.fixture(scope="module")
def vlfuse(cfg):
    return fill_(build_vlfuse(cfg), prefix=PREFIX).eval()


def _assert_levels(got, ref, atol=ATOL):
    assert len(got) == len(ref) == 5
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=0, atol=atol)


def test_block_matches_reference(vlfuse, golden):
    case = golden["BiAttentionBlockForCheckpoint"]
    inputs, outputs = case["inputs"], case["outputs"]
    with torch.no_grad():
        visual, l0 = vlfuse.b_attn(inputs["q0_q4"], inputs["l"], inputs["attention_mask_l"])
    _assert_levels(visual, outputs["q0_q4"])
    torch.testing.assert_close(l0, outputs["l0"], rtol=0, atol=ATOL)


def test_raw_attention_matches_reference(vlfuse, golden):
    case = golden["BiMultiHeadAttention"]
    with torch.no_grad():
        delta_v, delta_l = vlfuse.b_attn.attn(**case["inputs"])
    torch.testing.assert_close(delta_v, case["outputs"]["delta_v"], rtol=0, atol=ATOL)
    torch.testing.assert_close(delta_l, case["outputs"]["delta_l"], rtol=0, atol=ATOL)


def test_clamped_attention_matches_reference_relatively(vlfuse, golden):
    case = golden["BiMultiHeadAttention_clamped"]
    attn = vlfuse.b_attn.attn
    with torch.no_grad():
        raw = torch.bmm(attn._heads(attn.v_proj(case["inputs"]["v"]) * attn.scale),
                        attn._heads(attn.l_proj(case["inputs"]["l"])).transpose(1, 2))
        delta_v, delta_l = attn(**case["inputs"])
    assert raw.abs().max() > 50000  # the case really exercises the clamps
    for got, ref in [(delta_v, case["outputs"]["delta_v"]), (delta_l, case["outputs"]["delta_l"])]:
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_vlfuse_wrapper_matches_reference(vlfuse, golden):
    inputs, outputs = golden["VLFuse"]["inputs"], golden["VLFuse"]["outputs"]
    lang = {"hidden": inputs["lang_hidden"], "masks": inputs["masks"], "aggregate": torch.zeros(2, 768)}
    with torch.no_grad():
        out = vlfuse({"visual": inputs["visual"], "lang": lang})
    _assert_levels(out["visual"], outputs["visual"])
    torch.testing.assert_close(out["lang"]["hidden"], outputs["lang_hidden"], rtol=0, atol=ATOL)
    assert out["lang"]["masks"] is inputs["masks"] and out["lang"]["aggregate"] is lang["aggregate"]
    assert lang["hidden"] is inputs["lang_hidden"]  # the caller's dict is not modified


def test_build_maps_config(cfg, vlfuse):
    attn = vlfuse.b_attn.attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim, attn.v_dim, attn.l_dim) == (2048, 8, 256, 256, 768)
    assert attn.clamp_min_for_underflow and attn.clamp_max_for_overflow and not attn.stable_softmax_2d
    assert attn.dropout == pytest.approx(0.1)
    assert sorted(k for k in vlfuse.state_dict()) == sorted(
        k[len(PREFIX):] for k in _manifest_keys() if k.startswith(PREFIX))
    fresh = build_vlfuse(cfg)
    torch.testing.assert_close(fresh.b_attn.gamma_v.detach(), torch.full((256,), 1.0 / cfg.MODEL.DYHEAD.NUM_CONVS))


def _manifest_keys():
    keys = json.loads((REFERENCE / "state_dict_glip_tiny.json").read_text())["keys"]
    return [k[len("module."):] for k in keys]


def _tiny_attention(**kwargs):
    torch.manual_seed(0)
    return BiMultiHeadAttention(v_dim=6, l_dim=10, embed_dim=8, num_heads=2, **kwargs).eval()


def test_attention_against_hand_computation():
    attn = _tiny_attention()
    v, l = torch.randn(2, 5, 6), torch.randn(2, 3, 10)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    with torch.no_grad():
        delta_v, delta_l = attn(v, l, mask)
        q = attn.v_proj(v).view(2, 5, 2, 4).transpose(1, 2) / 2.0
        k = attn.l_proj(l).view(2, 3, 2, 4).transpose(1, 2)
        logits = q @ k.transpose(-1, -2)  # (B, heads, N, T)
        p_v = logits.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(-1)
        p_l = logits.transpose(-1, -2).softmax(-1)  # text attends to every visual position
        vv = attn.values_v_proj(v).view(2, 5, 2, 4).transpose(1, 2)
        vl = attn.values_l_proj(l).view(2, 3, 2, 4).transpose(1, 2)
        exp_v = attn.out_v_proj((p_v @ vl).transpose(1, 2).reshape(2, 5, 8))
        exp_l = attn.out_l_proj((p_l @ vv).transpose(1, 2).reshape(2, 3, 8))
    torch.testing.assert_close(delta_v, exp_v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(delta_l, exp_l, rtol=1e-5, atol=1e-6)


def test_dropout_attribute_controls_training_randomness():
    attn = _tiny_attention()
    v, l = torch.randn(1, 4, 6), torch.randn(1, 3, 10)
    with torch.no_grad():
        ref = attn(v, l)
        attn.train()
        attn.dropout = 0.0
        out = attn(v, l)
        attn.dropout = 0.9
        noisy = attn(v, l)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(noisy[0], ref[0])


def test_block_residual_on_normalised_inputs():
    torch.manual_seed(0)
    block = BiAttentionBlockForCheckpoint(6, 10, 8, 2, init_values=0.0).eval()
    visual = [torch.randn(1, 6, 2, 3), torch.randn(1, 6, 1, 1)]
    l = torch.randn(1, 3, 10)
    with torch.no_grad():
        out, l0 = block(visual, l)
    torch.testing.assert_close(l0, block.layer_norm_l(l))
    flat = torch.cat([x.flatten(2).transpose(1, 2) for x in visual], 1)
    normed = block.layer_norm_v(flat).transpose(1, 2)
    torch.testing.assert_close(out[0], normed[:, :, :6].reshape(1, 6, 2, 3))
    torch.testing.assert_close(out[1], normed[:, :, 6:].reshape(1, 6, 1, 1))


def test_checkpointed_forward_and_backward_match():
    torch.manual_seed(0)
    plain = VLFuse(visual_dim=6, lang_dim=10, embed_dim=8, num_heads=2, dropout=0.0).train()
    ckpt = VLFuse(visual_dim=6, lang_dim=10, embed_dim=8, num_heads=2, dropout=0.0, use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    visual = [torch.randn(1, 6, 2, 2) for _ in range(5)]
    lang = {"hidden": torch.randn(1, 3, 10), "masks": torch.tensor([[1, 1, 0]])}
    results = []
    for model in (plain, ckpt):
        out = model({"visual": visual, "lang": lang})
        loss = sum(x.sum() for x in out["visual"]) + out["lang"]["hidden"].pow(2).sum()
        loss.backward()
        results.append((loss.detach(), model.b_attn.attn.v_proj.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_other_fusion_types_raise():
    with pytest.raises(NotImplementedError, match="MHA-S"):
        VLFuse(fuse_type="MHA-S")


@pytest.mark.parametrize("scale_inputs", [1.0, 300.0])  # 300: the +-50000 clamps bite
def test_blocked_inference_matches_batched_path(scale_inputs):
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(v_dim=32, l_dim=48, embed_dim=64, num_heads=4, clamp_min_for_underflow=True,
                                clamp_max_for_overflow=True).eval()
    v, l = scale_inputs * torch.randn(2, 37, 32), scale_inputs * torch.randn(2, 9, 48)
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    with torch.no_grad():
        blocked = attn(v, l, attention_mask_l=mask)
        batched = attn._forward_batched(v, l, attention_mask_l=mask)
        if scale_inputs > 1:
            raw = torch.bmm(attn._heads(attn.v_proj(v) * attn.scale), attn._heads(attn.l_proj(l)).transpose(1, 2))
            assert raw.abs().max() > 50000
    for got, ref in zip(blocked, batched):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_evaluation_chosen_by_autograd_device_and_autocast(monkeypatch):
    attn = BiMultiHeadAttention(v_dim=8, l_dim=8, embed_dim=16, num_heads=2).eval()
    calls = []
    for name in ("_forward_blocked", "_forward_fused", "_forward_batched"):
        monkeypatch.setattr(attn, name, lambda *a, name=name: calls.append(name) or (None, None))
    v, l = torch.randn(1, 5, 8), torch.randn(1, 3, 8)
    attn(v, l)
    with torch.no_grad():
        attn(v, l)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the reference's clamped formulation under autocast
            attn(v, l)
        attn.blocked_inference = False
        attn(v, l)
    attn(v, l)
    assert calls == ["_forward_fused", "_forward_blocked", "_forward_batched", "_forward_batched", "_forward_batched"]


def test_attention_width_from_the_project_key(cfg):
    """FUSE_CONFIG.ATTN_EMBED_DIM (not in the reference, default 2048) sets the attention width; 8 heads."""
    narrow = cfg.clone()
    narrow.defrost()
    narrow.MODEL.DYHEAD.FUSE_CONFIG.ATTN_EMBED_DIM = 256
    attn = build_vlfuse(narrow).b_attn.attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (256, 8, 32)
    assert attn.v_proj.weight.shape == (256, 256) and attn.out_l_proj.weight.shape == (768, 256)
    from glip.config import cfg as defaults
    assert defaults.MODEL.DYHEAD.FUSE_CONFIG.ATTN_EMBED_DIM == 2048


def test_blocked_inference_with_scattered_and_missing_valid_tokens():
    """Valid tokens scattered among padded ones, none valid, all valid and a prefix: the same as the batched path."""
    torch.manual_seed(1)
    attn = BiMultiHeadAttention(v_dim=16, l_dim=24, embed_dim=32, num_heads=4,
                                clamp_min_for_underflow=True, clamp_max_for_overflow=True).eval()
    v, l = torch.randn(4, 29, 16), torch.randn(4, 7, 24)
    mask = torch.tensor([[0, 1, 1, 0, 1, 0, 1], [0] * 7, [1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    with torch.no_grad():
        blocked = attn(v, l, attention_mask_l=mask)
        batched = attn._forward_batched(v, l, attention_mask_l=mask)
    for got, ref in zip(blocked, batched):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale_inputs", [1.0, 300.0])  # 300: the +-50000 clamps bite
def test_fused_training_path_matches_batched_values_and_gradients(scale_inputs):
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(v_dim=16, l_dim=24, embed_dim=32, num_heads=4, dropout=0.0,
                                clamp_min_for_underflow=True, clamp_max_for_overflow=True).double().train()
    attn.block_rows = 7
    v = (scale_inputs * torch.randn(2, 23, 16, dtype=torch.float64)).requires_grad_()
    l = (scale_inputs * torch.randn(2, 6, 24, dtype=torch.float64)).requires_grad_()
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [1] * 6])
    weights = [torch.randn(2, 23, 16, dtype=torch.float64), torch.randn(2, 6, 24, dtype=torch.float64)]
    results = []
    for path in (attn.forward, attn._forward_batched):
        attn.zero_grad()
        v.grad = l.grad = None
        outs = path(v, l, attention_mask_l=mask)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        results.append([o.detach() for o in outs] + [v.grad, l.grad] + [p.grad for p in attn.parameters()])
    # saturated softmaxes (the clamped case) have gradients that vanish in the reference and are rounding noise
    # here: absolute tolerance relative to the largest gradient
    scale = max(t.abs().max().item() for t in results[1])
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-12 * scale)


def test_fused_training_path_applies_attention_dropout():
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(v_dim=8, l_dim=8, embed_dim=16, num_heads=2, dropout=0.5).train()
    v, l = torch.randn(1, 40, 8), torch.randn(1, 5, 8)
    attn.eval()
    with torch.no_grad():
        ref = attn(v, l)
    attn.train()
    torch.manual_seed(1)
    first = attn(v, l)
    torch.manual_seed(1)
    again = attn(v, l)
    for a, b, r in zip(first, again, ref):
        assert torch.equal(a, b)  # drawn from the default generator: replayable (gradient checkpointing)
        assert not torch.allclose(a, r)
