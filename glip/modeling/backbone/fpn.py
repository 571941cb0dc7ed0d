"""Feature Pyramid Network (top-down, nearest upsampling) with RetinaNet P6/P7 or max-pool extra levels."""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def make_fpn_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                  use_gn: bool = False, use_relu: bool = False, gn_groups: int = 32,
                  gn_eps: float = 1e-5) -> nn.Module:
    """Conv (Caffe2 XavierFill = kaiming_uniform(a=1), zero bias) [+ GroupNorm, no conv bias] [+ ReLU].

    A bare conv is returned when neither option is set, so keys are `<name>.weight` / `<name>.bias`; otherwise an
    nn.Sequential (`<name>.0.weight`, `<name>.1.weight`, ...).
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                     padding=dilation * (kernel_size - 1) // 2, dilation=dilation, bias=not use_gn)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)
    extra = []
    if use_gn:
        extra.append(nn.GroupNorm(gn_groups, out_channels, eps=gn_eps))
    if use_relu:
        extra.append(nn.ReLU(inplace=True))
    return nn.Sequential(conv, *extra) if extra else conv


class LastLevelP6P7(nn.Module):
    """RetinaNet extra levels: P6 = conv3x3/2(P5 if in == out channels else C5), P7 = conv3x3/2(ReLU(P6))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)
        self.use_P5 = in_channels == out_channels

    def forward(self, c5: torch.Tensor, p5: torch.Tensor) -> List[torch.Tensor]:
        p6 = self.p6(p5 if self.use_P5 else c5)
        return [p6, self.p7(F.relu(p6))]


class LastLevelMaxPool(nn.Module):
    """One extra level by 1x1 max-pooling with stride 2 of the last output."""

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [F.max_pool2d(x, 1, 2, 0)]


class FPN(nn.Module):
    """Top-down pyramid over consecutive feature maps (highest resolution first).

    Level `idx` (1-based) with non-zero input channels gets a lateral 1x1 `fpn_inner{idx}` and an output 3x3
    `fpn_layer{idx}`; inputs whose channel count is 0 are skipped (GLIP's P3-P7 variant ignores the stride-4 map).
    The coarser running sum is upsampled (nearest) to the lateral's size and added. `drop_block` (if given) is
    applied to each merged map before its output conv in training mode only. The extra levels come from
    `top_blocks` (LastLevelP6P7 reads (C5, P5), LastLevelMaxPool reads P5).
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int, top_blocks: Optional[nn.Module] = None,
                 drop_block: Optional[nn.Module] = None, use_gn: bool = False, use_relu: bool = False,
                 gn_groups: int = 32, gn_eps: float = 1e-5):
        super().__init__()
        self.inner_blocks = []
        self.layer_blocks = []
        for idx, in_channels in enumerate(in_channels_list, 1):
            if in_channels == 0:
                continue
            inner, layer = f"fpn_inner{idx}", f"fpn_layer{idx}"
            opts = dict(use_gn=use_gn, use_relu=use_relu, gn_groups=gn_groups, gn_eps=gn_eps)
            self.add_module(inner, make_fpn_conv(in_channels, out_channels, 1, **opts))
            self.add_module(layer, make_fpn_conv(out_channels, out_channels, 3, 1, **opts))
            self.inner_blocks.append(inner)
            self.layer_blocks.append(layer)
        self.top_blocks = top_blocks
        self.drop_block = drop_block

    def _maybe_drop(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_block(x) if self.drop_block is not None and self.training else x

    def forward(self, x: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """x: feature maps (B, C_i, H_i, W_i), finest first -> list of (B, out_channels, H_l, W_l), finest first.

        The last len(inner_blocks) inputs are used (pairs are matched from the coarsest end, as in the reference).
        """
        last_inner = getattr(self, self.inner_blocks[-1])(x[-1])
        results = [getattr(self, self.layer_blocks[-1])(last_inner)]
        for feature, inner, layer in zip(x[:-1][::-1], self.inner_blocks[:-1][::-1], self.layer_blocks[:-1][::-1]):
            lateral = getattr(self, inner)(feature)
            if lateral.shape[-2:] != last_inner.shape[-2:]:
                top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            else:
                top_down = last_inner
            last_inner = lateral + top_down
            results.insert(0, getattr(self, layer)(self._maybe_drop(last_inner)))
        if isinstance(self.top_blocks, LastLevelP6P7):
            results.extend(self.top_blocks(x[-1], results[-1]))
        elif self.top_blocks is not None:
            results.extend(self.top_blocks(results[-1]))
        return results
