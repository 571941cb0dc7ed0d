"""Backbone builders: map the official cfg.MODEL.BACKBONE / SWINT / FPN keys to module arguments."""
from torch import nn

from .backbone_with_fpn import BackboneWithFPN
from .drop_block import DropBlock2D
from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from .swin import build_swint_backbone


def _build_body(cfg) -> nn.Module:
    version = cfg.MODEL.SWINT.VERSION
    if version != "v1":
        raise NotImplementedError(f"MODEL.SWINT.VERSION {version!r} is not supported (only 'v1')")
    return build_swint_backbone(cfg)


def _group_norm_groups(cfg, channels: int) -> int:
    """GroupNorm group count from cfg.MODEL.GROUP_NORM (DIM_PER_GP or NUM_GROUPS, exactly one set)."""
    dim_per_gp = cfg.MODEL.GROUP_NORM.DIM_PER_GP
    num_groups = cfg.MODEL.GROUP_NORM.NUM_GROUPS
    if dim_per_gp > 0:
        return channels // dim_per_gp
    return num_groups


def _build_fpn(cfg, in_channels_list, out_channels: int, top_blocks: nn.Module) -> FPN:
    for key in ("USE_SPP", "USE_PAN", "USE_DYHEAD", "RETURN_SWINT_FEATURE_BEFORE_FUSION"):
        if cfg.MODEL.FPN.get(key, False):
            raise NotImplementedError(f"MODEL.FPN.{key} is not supported")
    gn = {}
    if cfg.MODEL.FPN.USE_GN:
        gn = dict(gn_groups=_group_norm_groups(cfg, out_channels), gn_eps=cfg.MODEL.GROUP_NORM.EPSILON)
    drop_block = None
    if cfg.MODEL.FPN.DROP_BLOCK:
        drop_block = DropBlock2D(cfg.MODEL.FPN.DROP_PROB, cfg.MODEL.FPN.DROP_SIZE)
    return FPN(in_channels_list=in_channels_list, out_channels=out_channels, top_blocks=top_blocks,
               drop_block=drop_block, use_gn=cfg.MODEL.FPN.USE_GN, use_relu=cfg.MODEL.FPN.USE_RELU, **gn)


def build_retinanet_swint_fpn_backbone(cfg) -> BackboneWithFPN:
    """"SWINT-FPN-RETINANET": Swin stages 1-3 -> FPN P3-P5 + P6/P7 from P5 (strides 8..128)."""
    body = _build_body(cfg)
    stage_channels = list(cfg.MODEL.SWINT.OUT_CHANNELS)
    out_channels = cfg.MODEL.BACKBONE.OUT_CHANNELS
    fpn = _build_fpn(cfg, [0] + stage_channels[-3:], out_channels, LastLevelP6P7(out_channels, out_channels))
    return BackboneWithFPN(body, fpn, out_channels)


def build_swint_fpn_backbone(cfg) -> BackboneWithFPN:
    """"SWINT-FPN": Swin stages 0-3 -> FPN P2-P5 + max-pooled P6 (strides 4..64)."""
    body = _build_body(cfg)
    stage_channels = list(cfg.MODEL.SWINT.OUT_CHANNELS)
    out_channels = cfg.MODEL.BACKBONE.OUT_CHANNELS
    fpn = _build_fpn(cfg, stage_channels[-4:], out_channels, LastLevelMaxPool())
    return BackboneWithFPN(body, fpn, out_channels)


BACKBONES = {
    "SWINT-FPN-RETINANET": build_retinanet_swint_fpn_backbone,
    "SWINT-FPN": build_swint_fpn_backbone,
}


def build_backbone(cfg) -> BackboneWithFPN:
    """The visual backbone named by cfg.MODEL.BACKBONE.CONV_BODY."""
    name = cfg.MODEL.BACKBONE.CONV_BODY
    if name not in BACKBONES:
        raise KeyError(f"cfg.MODEL.BACKBONE.CONV_BODY {name!r} is not registered; known: {sorted(BACKBONES)}")
    return BACKBONES[name](cfg)
