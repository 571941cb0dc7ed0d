"""The visual block of the VLDyHead tower: DyHead's scale-aware DyConv with DCNv2, plus its parts.

`DyConv` mixes every FPN level with its neighbours: for level l it averages a 3x3 (deformable) conv of level l,
a stride-2 conv of the finer level l - 1 and a bilinearly upsampled conv of the coarser level l + 1, weighted by
a per-branch scale attention, then applies a dynamic ReLU. State-dict keys follow the reference:
`DyConv.{0,1,2}.conv/bn`, `AttnConv.1`, `relu.fc.{0,2}`, `offset`.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from glip.layers.deform_conv import ModulatedDeformConv

NormType = Union[None, str, Tuple[str, int]]


class HSigmoid(nn.Module):
    """Hard sigmoid `relu6(x + 3) * h_max / 6` (the reference's `h_sigmoid`)."""

    def __init__(self, h_max: float = 1.0):
        super().__init__()
        self.h_max = h_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3) * self.h_max / 6


def make_divisible(v: float, divisor: int, min_value: Optional[int] = None) -> int:
    """Round `v` to the nearest multiple of `divisor` (at least `min_value`) without going 10% below `v`."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class DyReLU(nn.Module):
    """Dynamic ReLU (DY-ReLU-B): channel-wise piecewise-linear activation whose slopes/intercepts come from the
    globally pooled input, `out = max_k(x * a_k + b_k)`.

    `fc` = Linear(inp, squeeze) -> ReLU -> Linear(squeeze, oup * exp) -> HSigmoid, with exp = 4 (K2 and bias),
    2 or 1. Coefficients: `a_k = (y - 0.5) * 2 * lambda_a + init_a[k]`, `b_k = y - 0.5 + init_b[k]`.
    With `use_spatial`, a softmax spatial attention (`spa` = 1x1 conv + BatchNorm) rescales the output.

    forward: (B, inp, H, W) -> (B, oup, H, W) (inp == oup in GLIP).
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        reduction: int = 4,
        lambda_a: float = 1.0,
        K2: bool = True,
        use_bias: bool = True,
        use_spatial: bool = False,
        init_a: Sequence[float] = (1.0, 0.0),
        init_b: Sequence[float] = (0.0, 0.0),
    ):
        super().__init__()
        self.oup = oup
        self.lambda_a = lambda_a * 2
        self.K2 = K2
        self.use_bias = use_bias
        self.exp = (4 if use_bias else 2) if K2 else (2 if use_bias else 1)
        self.init_a = tuple(init_a)
        self.init_b = tuple(init_b)
        squeeze = inp // reduction if reduction == 4 else make_divisible(inp // reduction, 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(inp, squeeze), nn.ReLU(inplace=True), nn.Linear(squeeze, oup * self.exp), HSigmoid()
        )
        if use_spatial:
            self.spa = nn.Sequential(nn.Conv2d(inp, 1, kernel_size=1), nn.BatchNorm2d(1))
        else:
            self.spa = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.fc(self.avg_pool(x).view(b, c)).view(b, self.oup * self.exp, 1, 1)
        if self.exp == 4:
            a1, b1, a2, b2 = torch.split(y, self.oup, dim=1)
            a1 = (a1 - 0.5) * self.lambda_a + self.init_a[0]
            a2 = (a2 - 0.5) * self.lambda_a + self.init_a[1]
            b1 = b1 - 0.5 + self.init_b[0]
            b2 = b2 - 0.5 + self.init_b[1]
            out = torch.maximum(torch.addcmul(b1, x, a1), torch.addcmul(b2, x, a2))     # x * a_k + b_k
        elif self.exp == 2 and self.use_bias:
            a1, b1 = torch.split(y, self.oup, dim=1)
            out = x * ((a1 - 0.5) * self.lambda_a + self.init_a[0]) + (b1 - 0.5 + self.init_b[0])
        elif self.exp == 2:
            a1, a2 = torch.split(y, self.oup, dim=1)
            a1 = (a1 - 0.5) * self.lambda_a + self.init_a[0]
            a2 = (a2 - 0.5) * self.lambda_a + self.init_a[1]
            out = torch.max(x * a1, x * a2)
        else:
            out = x * ((y - 0.5) * self.lambda_a + self.init_a[0])
        if self.spa is not None:
            ys = self.spa(x).view(b, -1)
            ys = F.softmax(ys, dim=1).view(b, 1, h, w) * h * w
            out = out * (F.hardtanh(ys, 0, 3) / 3)
        return out


def make_norm(norm: NormType, channels: int) -> Optional[nn.Module]:
    """The normalisation after a DyConv conv, from the reference's `bn_type`.

    None; "gn" / ("gn", num_groups) GroupNorm (16 groups by default); "bn" BatchNorm2d; "sbn" SyncBatchNorm;
    "nsbn" (naive sync BN) BatchNorm2d, identical in a single process; "af" frozen (affine) BatchNorm.
    """
    if norm is None:
        return None
    gn_groups = 16
    if isinstance(norm, (list, tuple)):
        if len(norm) != 2 or norm[0] != "gn":
            raise ValueError(f"a (type, groups) norm must be ('gn', num_groups), got {norm!r}")
        norm, gn_groups = norm
    if norm == "gn":
        return nn.GroupNorm(num_groups=int(gn_groups), num_channels=channels)
    if norm in ("bn", "nsbn"):
        return nn.BatchNorm2d(channels)
    if norm == "sbn":
        return nn.SyncBatchNorm(channels)
    if norm == "af":
        from torchvision.ops import FrozenBatchNorm2d

        return FrozenBatchNorm2d(channels)
    raise ValueError(f"unknown norm type {norm!r}")


class Conv3x3Norm(nn.Module):
    """3x3 conv (padding 1; DCNv2 `ModulatedDeformConv` if `deformable`) followed by an optional norm (`bn`).

    forward(x (B, C_in, H, W), offset=None, mask=None) -> (B, C_out, H_out, W_out); offset/mask (DCNv2 only) as
    in `glip.layers.deform_conv.modulated_deform_conv`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        groups: int = 1,
        deformable: bool = False,
        bn_type: NormType = None,
    ):
        super().__init__()
        self.deformable = deformable
        if deformable:
            self.conv = ModulatedDeformConv(
                in_channels, out_channels, kernel_size=3, stride=stride, padding=1, groups=groups
            )
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, groups=groups)
        self.bn = make_norm(bn_type, out_channels)

    def forward(
        self, x: torch.Tensor, offset: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        x = self.conv(x, offset, mask) if self.deformable else self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x


class DyConv(nn.Module):
    """One DyHead block over all FPN levels; maps `{"visual": [L x (B, C_in, H_l, W_l)], "lang": dict}` to
    `{"visual": [L x (B, C_out, H_l, W_l)], "lang": <the same dict>}`.

    Level l: `mid = DyConv[1](x_l)`, `low = DyConv[2](x_{l-1})` (stride 2, l > 0),
    `high = upsample_bilinear(DyConv[0](x_{l+1}), size of x_l)` (align_corners=True, l < L-1). With DCNv2 all
    three convs use the offsets/mask predicted by `offset` (27 = 18 offsets + 9 mask logits) on level l, also for
    the coarser level l + 1 (read as raw memory, see `reinterpret_as_output_size`). With `use_dyfuse` the branches
    are averaged after weighting by `HSigmoid(AttnConv(branch))` (pool -> 1x1 conv to 1 channel -> ReLU), else
    plainly averaged; then DyReLU (or ReLU).

    Args:
        in_channels, out_channels: channels in / out.
        use_dyfuse: scale-aware attention (DYHEAD.USE_DYFUSE).
        use_dyrelu: DyReLU instead of ReLU (DYHEAD.USE_DYRELU).
        use_deform: DCNv2 convs with predicted offsets (DYHEAD.USE_DFCONV).
        bn_type: norm after each conv (see `make_norm`; GLIP: ("gn", 16)).
        conv_func: optional factory `(in_channels, out_channels, stride) -> module` replacing `Conv3x3Norm`.
    """

    def __init__(
        self,
        in_channels: int = 256,
        out_channels: int = 256,
        use_dyfuse: bool = True,
        use_dyrelu: bool = False,
        use_deform: bool = False,
        bn_type: NormType = None,
        conv_func: Optional[Callable[[int, int, int], nn.Module]] = None,
    ):
        super().__init__()
        if conv_func is None:

            def conv_func(i, o, s):
                return Conv3x3Norm(i, o, s, deformable=use_deform, bn_type=bn_type)

        self.DyConv = nn.ModuleList(
            [conv_func(in_channels, out_channels, 1), conv_func(in_channels, out_channels, 1),
             conv_func(in_channels, out_channels, 2)]
        )
        if use_dyfuse:
            self.AttnConv = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, 1, kernel_size=1), nn.ReLU(inplace=True)
            )
            self.h_sigmoid = HSigmoid()
        else:
            self.AttnConv = None
        self.relu = DyReLU(in_channels, out_channels) if use_dyrelu else nn.ReLU()
        self.offset = nn.Conv2d(in_channels, 27, kernel_size=3, stride=1, padding=1) if use_deform else None
        self.init_weights()

    def init_weights(self):
        """N(0, 0.01) weights and zero biases for the plain convs of the branches and the attention."""
        modules = list(self.DyConv.modules()) + (list(self.AttnConv.modules()) if self.AttnConv is not None else [])
        for m in modules:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _level_output(self, feats: List[torch.Tensor], level: int) -> torch.Tensor:
        """The fused (pre-activation) features of one level, (B, C_out, H_l, W_l)."""
        feature = feats[level]
        conv_args = {}
        if self.offset is not None:
            offset_mask = self.offset(feature)
            conv_args = {"offset": offset_mask[:, :18], "mask": offset_mask[:, 18:].sigmoid()}
        branches = [self.DyConv[1](feature, **conv_args)]
        if level > 0:
            branches.append(self.DyConv[2](feats[level - 1], **conv_args))
        if level < len(feats) - 1:
            coarse = self.DyConv[0](feats[level + 1], **conv_args)
            branches.append(F.interpolate(coarse, size=feature.shape[-2:], mode="bilinear", align_corners=True))
        if self.AttnConv is None:
            return torch.stack(branches).mean(dim=0)
        fused = None  # sum of the attention-weighted branches, without stacking them
        for branch in branches:
            weight = self.h_sigmoid(self.AttnConv(branch))                               # (B, 1, 1, 1)
            fused = branch * weight if fused is None else fused.addcmul_(branch, weight)
        return fused.div_(len(branches))

    def forward(self, inputs: Dict[str, object]) -> Dict[str, object]:
        feats = list(inputs["visual"])
        fused = [self._level_output(feats, level) for level in range(len(feats))]
        return {"visual": [self.relu(x) for x in fused], "lang": inputs.get("lang")}


def build_dyconv(cfg, index: int) -> DyConv:
    """The DyConv of tower block `index` from cfg.MODEL.DYHEAD.* (the first block may take backbone channels;
    its switches are then disabled unless in == out channels, as in the reference)."""
    head = cfg.MODEL.DYHEAD
    if head.CONV_FUNC:
        raise NotImplementedError(f"MODEL.DYHEAD.CONV_FUNC={head.CONV_FUNC!r} is not supported")
    if head.USE_GN:
        bn_type = ("gn", cfg.MODEL.GROUP_NORM.NUM_GROUPS)
    elif head.USE_NSYNCBN:
        bn_type = "nsbn"
    elif head.USE_SYNCBN:
        bn_type = "sbn"
    else:
        bn_type = None
    in_channels = cfg.MODEL.BACKBONE.OUT_CHANNELS if index == 0 else head.CHANNELS
    same = in_channels == head.CHANNELS or index > 0
    return DyConv(
        in_channels,
        head.CHANNELS,
        use_dyfuse=head.USE_DYFUSE and same,
        use_dyrelu=head.USE_DYRELU and same,
        use_deform=head.USE_DFCONV and same,
        bn_type=bn_type,
    )
