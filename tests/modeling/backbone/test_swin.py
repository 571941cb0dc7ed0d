"""SwinTransformer: window helpers, relative positions, shift mask, sizes, drop path, freezing, checkpointing."""
import pytest
import torch
from torch import nn

from glip.modeling.backbone.swin import (
    PatchMerging,
    SwinTransformer,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def small_swin(**kw):
    args = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
    args.update(kw)
    return SwinTransformer(**args)


def test_window_partition_roundtrip_and_order():
    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).view(2, 4, 6, 3)
    win = window_partition(x, 2)
    assert win.shape == (2 * 2 * 3, 2, 2, 3)
    # second window of image 0 covers rows 0-1, columns 2-3
    assert torch.equal(win[1], x[0, 0:2, 2:4])
    # fourth window of image 0 starts the second window row
    assert torch.equal(win[3], x[0, 2:4, 0:2])
    assert torch.equal(window_reverse(win, 2, 4, 6), x)


def test_relative_position_index_window2_by_hand():
    # tokens (0,0),(0,1),(1,0),(1,1); index = (dy + 1) * 3 + (dx + 1) with d = query - key
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    idx = relative_position_index((2, 2))
    assert idx.dtype == torch.int64
    assert torch.equal(idx, expected)
    assert relative_position_index((7, 7)).shape == (49, 49)
    assert int(relative_position_index((7, 7)).max()) == 13 * 13 - 1


def test_shifted_window_mask_regions():
    mask = shifted_window_mask(7, 7, 7, 3)
    assert mask.shape == (1, 49, 49)
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    tok = lambda y, x: y * 7 + x  # noqa: E731
    assert mask[0, tok(0, 0), tok(3, 3)] == 0.0      # both in rows/cols 0..3
    assert mask[0, tok(0, 0), tok(4, 0)] == -100.0   # row 4 belongs to the wrapped-around strip
    assert mask[0, tok(5, 5), tok(6, 6)] == 0.0
    assert mask[0, tok(3, 6), tok(3, 3)] == -100.0
    # larger map: interior windows are unmasked, only the last row/column of windows is split
    big = shifted_window_mask(14, 14, 7, 3)
    assert big.shape == (4, 49, 49)
    assert torch.all(big[0] == 0) and torch.any(big[3] != 0)


def test_patch_merging_odd_size_order():
    pm = PatchMerging(dim=1)
    with torch.no_grad():
        pm.norm.weight.fill_(1.0)
        pm.norm.bias.zero_()
        pm.reduction.weight.copy_(torch.eye(2, 4))
    x = torch.arange(1.0, 10.0).view(1, 9, 1)  # 3x3 map
    out = pm(x, 3, 3)
    assert out.shape == (1, 4, 2)
    # first 2x2 group is (x00, x10, x01, x11) = (1, 4, 2, 5) before the LayerNorm
    group = torch.tensor([1.0, 4.0, 2.0, 5.0])
    normed = (group - group.mean()) / torch.sqrt(group.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(out[0, 0], normed[:2])


@pytest.mark.parametrize("hw", [(64, 64), (97, 150), (100, 148)])
def test_any_input_size_gives_ceil_divided_stages(hw):
    model = small_swin().eval()
    h, w = hw
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    assert len(outs) == 4
    for i, o in enumerate(outs):
        stride = 4 * 2 ** i
        assert o.shape == (1, 16 * 2 ** i, -(-h // stride), -(-w // stride))
        assert torch.isfinite(o).all()


def test_norm0_identity_for_retinanet_and_keys():
    model = small_swin()
    assert isinstance(model.norm0, nn.Identity)
    assert isinstance(model.norm3, nn.LayerNorm)
    keys = model.state_dict().keys()
    assert "layers.0.downsample.reduction.weight" in keys and not any(k.startswith("layers.3.downsample") for k in keys)
    assert not any(k.startswith("norm0") for k in keys)
    assert isinstance(small_swin(backbone_arch="SWINT-FPN").norm0, nn.LayerNorm)


def test_drop_path_rates_follow_linspace():
    model = small_swin(drop_path_rate=0.2)
    rates = []
    for layer in model.layers:
        for blk in layer.blocks:
            rates.append(getattr(blk.drop_path, "drop_prob", 0.0))
    assert isinstance(model.layers[0].blocks[0].drop_path, nn.Identity)
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.2, 8))


def _trainable(module):
    return {p.requires_grad for p in module.parameters()}


def test_frozen_stages():
    assert all(p.requires_grad for p in small_swin(frozen_stages=-1).parameters())
    m0 = small_swin(frozen_stages=0)
    assert _trainable(m0.patch_embed) == {False} and _trainable(m0.layers[0]) == {True}
    m3 = small_swin(frozen_stages=3).train()
    assert _trainable(m3.patch_embed) == {False}
    assert _trainable(m3.layers[0]) == {False} and _trainable(m3.layers[1]) == {False}
    assert _trainable(m3.layers[2]) == {True} and _trainable(m3.norm3) == {True}
    assert not m3.layers[0].training and not m3.patch_embed.training and m3.layers[2].training
    # as in the reference, checkpointing is enabled only on stages i > frozen_stages - 1
    mc = small_swin(frozen_stages=3, use_checkpoint=True)
    assert [layer.use_checkpoint for layer in mc.layers] == [False, False, False, True]


def test_checkpoint_same_output_and_gradients():
    torch.manual_seed(0)
    plain = small_swin(drop_path_rate=0.3).train()
    ckpt = small_swin(drop_path_rate=0.3, use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 56)
    results = []
    for model in (plain, ckpt):
        model.zero_grad()
        torch.manual_seed(123)
        outs = model(x)
        sum((o * (k + 1)).sum() for k, o in enumerate(outs)).backward()
        results.append(([o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters()}))
    (o1, g1), (o2, g2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-5, atol=1e-6, msg=name)


def test_relative_position_index_is_model_computed_buffer():
    model = small_swin()
    buf = dict(model.named_buffers())["layers.1.blocks.0.attn.relative_position_index"]
    assert buf.dtype == torch.int64 and torch.equal(buf, relative_position_index((4, 4)))


@pytest.mark.parametrize("batch", [1, 2])
def test_inference_attention_matches_autograd_path(batch):
    """Without grad the window attention runs as one SDPA call (the shift mask repeated over the images only for a
    batch > 1) and the MLP's GELU as a post-op of fc1's product; same outputs as the explicit autograd path."""
    torch.manual_seed(0)
    model = small_swin().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # non-zero relative position bias
    x = torch.randn(batch, 3, 44, 60)  # padding to window multiples, shifted windows
    with torch.no_grad():
        fast = model(x)
    slow = model(x)  # grad enabled: explicit (q * scale) k^T + bias + mask, softmax
    assert slow[0].requires_grad
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5)
