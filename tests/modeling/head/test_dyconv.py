"""DyConv and its parts (`glip.modeling.head.dyconv`) against the reference golden and hand computations."""
import json

import pytest
import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from glip.modeling.head.dyconv import Conv3x3Norm, DyConv, DyReLU, HSigmoid, build_dyconv, make_norm
from helpers import REFERENCE, load_golden
from helpers.weights import fill_

PREFIX = "rpn.head.dyhead_tower.2."


def _glip_t_dyconv():
    return DyConv(256, 256, use_dyfuse=True, use_dyrelu=True, use_deform=True, bn_type=("gn", 16))


@pytest.fixture(scope="module")
def golden():
    return load_golden("modules/dyconv.pt")


@pytest.fixture(scope="module")
def manifest_shapes():
    keys = json.loads((REFERENCE / "state_dict_glip_tiny.json").read_text())["keys"]
    full = "module." + PREFIX
    return {k[len(full):]: tuple(v["shape"]) for k, v in keys.items() if k.startswith(full)}


def test_state_dict_matches_manifest(manifest_shapes):
    ours = {k: tuple(v.shape) for k, v in _glip_t_dyconv().state_dict().items()}
    assert ours == manifest_shapes


def test_build_from_official_config_matches_manifest(manifest_shapes):
    with open(REFERENCE / "config_glip_tiny_test.yaml") as f:
        cfg = CfgNode.load_cfg(f)
    for index in (0, 5):
        module = build_dyconv(cfg, index)
        assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == manifest_shapes
        assert isinstance(module.DyConv[0].bn, torch.nn.GroupNorm) and module.DyConv[0].bn.num_groups == 16


def test_matches_reference_golden(golden):
    assert golden["state_dict_prefix"] + "." == PREFIX
    module = fill_(_glip_t_dyconv(), prefix=PREFIX).eval()
    lang = {"hidden": torch.zeros(2, 4, 8)}
    with torch.no_grad():
        out = module({"visual": golden["inputs"]["visual"], "lang": lang})
        offsets = [module.offset(x) for x in golden["inputs"]["visual"]]
    assert out["lang"] is lang
    assert len(out["visual"]) == len(golden["outputs"]["visual"]) == 5
    for ours, ref in zip(offsets, golden["outputs"]["offset_conv_out_per_level"]):
        assert (ours - ref).abs().max().item() <= 1e-5
    for ours, ref in zip(out["visual"], golden["outputs"]["visual"]):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() <= 1e-5


def test_hsigmoid_values():
    x = torch.tensor([-4.0, -3.0, 0.0, 1.5, 3.0, 5.0])
    torch.testing.assert_close(HSigmoid()(x), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))
    torch.testing.assert_close(HSigmoid(h_max=2.0)(x), torch.tensor([0.0, 0.0, 1.0, 1.5, 2.0, 2.0]))


def test_dyrelu_by_hand():
    relu = DyReLU(4, 4)
    assert relu.fc[0].out_features == 1 and relu.fc[2].out_features == 16
    with torch.no_grad():
        relu.fc[0].weight.zero_()
        relu.fc[0].bias.zero_()
        relu.fc[2].weight.zero_()
        # fc output y -> hsigmoid(y) = (y + 3) / 6 in [0, 1]: a1 = 0.75 -> 1.5, b1 = 0.5 -> 0, a2 = 0.25 -> -0.5,
        # b2 = 1.0 -> 0.5 (per channel, same for all channels)
        relu.fc[2].bias.copy_(torch.tensor([1.5] * 4 + [0.0] * 4 + [-1.5] * 4 + [3.0] * 4))
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0]).view(1, 1, 2, 2).repeat(1, 4, 1, 1)
    expected = torch.maximum(1.5 * x + 0.0, -0.5 * x + 0.5)
    torch.testing.assert_close(relu(x), expected)


def test_make_norm_types():
    assert make_norm(None, 8) is None
    gn = make_norm(("gn", 4), 8)
    assert isinstance(gn, torch.nn.GroupNorm) and gn.num_groups == 4
    assert make_norm("gn", 32).num_groups == 16
    assert isinstance(make_norm("bn", 8), torch.nn.BatchNorm2d)
    with pytest.raises(ValueError):
        make_norm("ln", 8)


def test_conv3x3norm_plain_is_conv_then_norm():
    torch.manual_seed(0)
    block = Conv3x3Norm(4, 8, stride=2, bn_type=("gn", 2))
    x = torch.randn(2, 4, 5, 6)
    expected = F.group_norm(F.conv2d(x, block.conv.weight, block.conv.bias, 2, 1), 2, block.bn.weight, block.bn.bias)
    torch.testing.assert_close(block(x), expected)
    assert set(block.state_dict()) == {"conv.weight", "conv.bias", "bn.weight", "bn.bias"}


def test_plain_dyconv_by_hand():
    """No deformable conv, no scale attention, no norm: relu(mean of the three neighbour branches)."""
    torch.manual_seed(0)
    module = DyConv(4, 4, use_dyfuse=False, use_dyrelu=False, use_deform=False)
    assert module.offset is None and module.AttnConv is None
    assert set(module.state_dict()) == {f"DyConv.{i}.conv.{p}" for i in range(3) for p in ("weight", "bias")}
    feats = [torch.randn(2, 4, 8, 10), torch.randn(2, 4, 4, 5), torch.randn(2, 4, 2, 3)]
    out = module({"visual": feats, "lang": None})["visual"]

    def conv(i, x, stride):
        return F.conv2d(x, module.DyConv[i].conv.weight, module.DyConv[i].conv.bias, stride, 1)

    def up(x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)

    expected = [
        F.relu((conv(1, feats[0], 1) + up(conv(0, feats[1], 1), feats[0])) / 2),
        F.relu((conv(1, feats[1], 1) + conv(2, feats[0], 2) + up(conv(0, feats[2], 1), feats[1])) / 3),
        F.relu((conv(1, feats[2], 1) + conv(2, feats[1], 2)) / 2),
    ]
    for ours, ref in zip(out, expected):
        torch.testing.assert_close(ours, ref)


def test_scale_attention_weights_each_branch():
    torch.manual_seed(0)
    module = DyConv(4, 4, use_dyfuse=True, use_dyrelu=False, use_deform=False)
    feats = [torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    out = module({"visual": feats, "lang": None})["visual"]
    mid = module.DyConv[1](feats[1])
    low = module.DyConv[2](feats[0])

    def attn(x):
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return (F.relu(F.conv2d(pooled, module.AttnConv[1].weight, module.AttnConv[1].bias)) + 3).clamp(0, 6) / 6

    torch.testing.assert_close(out[1], F.relu((mid * attn(mid) + low * attn(low)) / 2))


def test_gradients_flow_to_offsets_and_all_parameters():
    module = DyConv(16, 16, use_dyfuse=True, use_dyrelu=True, use_deform=True, bn_type=("gn", 16))
    feats = [torch.randn(1, 16, 6, 8), torch.randn(1, 16, 3, 4), torch.randn(1, 16, 2, 2)]
    out = module({"visual": feats, "lang": None})["visual"]
    sum(o.square().sum() for o in out).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert module.offset.weight.grad.abs().sum() > 0
