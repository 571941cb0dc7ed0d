"""build_backbone from the reference's merged GLIP-T config: key names/shapes equal the official manifests."""
import json

import pytest
import torch
from yacs.config import CfgNode

from glip.modeling.backbone import build_backbone
from glip.modeling.backbone.backbone_with_fpn import BackboneWithFPN
from glip.modeling.backbone.drop_block import DropBlock2D
from helpers import REFERENCE


def reference_cfg():
    """The merged GLIP-T test config exactly as the reference dumped it (official key names)."""
    with open(REFERENCE / "config_glip_tiny_test.yaml") as f:
        return CfgNode.load_cfg(f)


def large_cfg():
    """GLIP-L (configs/pretrain/glip_Swin_L.yaml) backbone settings on top of the GLIP-T config."""
    cfg = reference_cfg()
    cfg.MODEL.SWINT.EMBED_DIM = 192
    cfg.MODEL.SWINT.DEPTHS = (2, 2, 18, 2)
    cfg.MODEL.SWINT.NUM_HEADS = (6, 12, 24, 48)
    cfg.MODEL.SWINT.WINDOW_SIZE = 12
    cfg.MODEL.SWINT.OUT_CHANNELS = (192, 384, 768, 1536)
    cfg.MODEL.SWINT.DROP_PATH_RATE = 0.4
    return cfg


def manifest_backbone(name):
    keys = json.loads((REFERENCE / f"state_dict_{name}.json").read_text())["keys"]
    prefix = "module.backbone."
    return {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}


def _check_against_manifest(model, name):
    expected = manifest_backbone(name)
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, value in state.items():
        assert list(value.shape) == expected[key]["shape"], key
        assert str(value.dtype).replace("torch.", "") == expected[key]["dtype"], key
    buffers = {k for k, _ in model.named_buffers()}
    assert buffers == {k for k, v in expected.items() if v["kind"] == "buffer"}


def test_glip_tiny_keys_and_shapes():
    with torch.device("meta"):
        model = build_backbone(reference_cfg())
    assert isinstance(model, BackboneWithFPN) and model.out_channels == 256
    _check_against_manifest(model, "glip_tiny")


def test_glip_large_keys_and_shapes_on_meta():
    with torch.device("meta"):
        model = build_backbone(large_cfg())
    _check_against_manifest(model, "glip_large")


def test_builder_reads_official_keys():
    cfg = reference_cfg()
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2
    cfg.MODEL.BACKBONE.USE_CHECKPOINT = True
    with torch.device("meta"):
        model = build_backbone(cfg)
    assert isinstance(model.fpn.drop_block, DropBlock2D)
    assert model.fpn.drop_block.drop_prob == 0.3 and model.fpn.drop_block.block_size == 3
    assert model.body.layers[3].blocks[1].drop_path.drop_prob == pytest.approx(0.2)
    assert not any(p.requires_grad for p in model.body.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.body.layers[0].parameters())
    assert all(p.requires_grad for p in model.body.layers[1].parameters())
    assert [layer.use_checkpoint for layer in model.body.layers] == [False, False, True, True]
    cfg.MODEL.FPN.DROP_BLOCK = False
    with torch.device("meta"):
        assert build_backbone(cfg).fpn.drop_block is None


def test_unknown_body_rejected():
    cfg = reference_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY = "R-50-FPN"
    with pytest.raises(KeyError):
        build_backbone(cfg)


def test_swint_fpn_variant_has_four_levels_plus_maxpool():
    cfg = reference_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY = "SWINT-FPN"
    cfg.MODEL.SWINT.DEPTHS = (1, 1, 1, 1)
    model = build_backbone(cfg).eval()
    assert "body.norm0.weight" in model.state_dict() and "fpn.fpn_inner1.weight" in model.state_dict()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 256, -(-64 // s), -(-96 // s)) for s in (4, 8, 16, 32, 64)]
