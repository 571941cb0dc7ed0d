"""Swin Transformer (v1) detection backbone, as GLIP's `SWINT` body computes it.

Pre-norm blocks with (shifted) window attention and a learned relative position bias; inputs of any size are
zero-padded to multiples of the patch size and, inside each block, of the window size. Stage `i` runs its blocks and
then (stages 0..2) a patch-merging downsample whose result feeds stage `i + 1`; the stage's own (pre-merging)
output goes through `norm{i}` and is returned as a feature map. Key names follow the official checkpoints
(`layers.N.blocks.M.attn.qkv`, `layers.N.downsample.reduction`, `norm1..norm3`, ...).
"""
import logging
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, to_2tuple, trunc_normal_
from torch import nn
from torch.utils import checkpoint

from glip.layers.cpu_gemm import OneDNNLinear, linear_gelu

logger = logging.getLogger(__name__)

SHIFT_MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cut (B, H, W, C) into non-overlapping windows: (B * H/ws * W/ws, ws, ws, C), row-major over windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C)."""
    n_win = (height // window_size) * (width // window_size)
    b = windows.shape[0] // n_win
    x = windows.view(b, height // window_size, width // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, height, width, -1)


def relative_position_index(window_size) -> torch.Tensor:
    """(Wh*Ww, Wh*Ww) int64 index into the (2Wh-1)*(2Ww-1) bias table for every (query, key) pair of a window."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


def shifted_window_mask(height: int, width: int, window_size: int, shift_size: int, device=None,
                        dtype=torch.float32) -> torch.Tensor:
    """Additive mask (nW, ws*ws, ws*ws) for shifted windows of a padded (height, width) map.

    Tokens that come from different regions of the cyclically shifted map get SHIFT_MASK_VALUE (-100), others 0.
    """
    region = torch.zeros((1, height, width, 1), device=device, dtype=dtype)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[:, hs, ws, :] = label
            label += 1
    region = window_partition(region, window_size).view(-1, window_size * window_size)
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return diff.masked_fill(diff != 0, SHIFT_MASK_VALUE).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias.

    Scores are `(q * head_dim^-0.5) @ k^T + bias (+ shift mask)`, softmax over keys. Without autograd the
    product runs as one `F.scaled_dot_product_attention` call with the summed bias/mask.
    """

    def __init__(self, dim: int, window_size, num_heads: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """(nH, N, N) bias gathered from the table."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) additive or None. Returns (B*nW, N, C)."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        fused = not torch.is_grad_enabled() and not (self.training and self.attn_drop.p > 0)
        # exporting: the explicit product, whose output layout does not depend on the attention kernel traced
        # (the fused kernel's strides make the head merge below a view that ONNX's re-tracing cannot redo)
        if fused and not torch.compiler.is_exporting():
            # inference: one fused kernel; same scores (q k^T) * scale + (bias + mask) up to fp32 rounding
            bias = self.relative_position_bias().unsqueeze(0)
            if mask is not None:
                bias = bias + mask.unsqueeze(1)                                     # (nW, nH, N, N)
                if bw != mask.shape[0]:
                    bias = bias.repeat(bw // mask.shape[0], 1, 1, 1)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
            return self.proj_drop(self.proj(x.transpose(1, 2).reshape(bw, n, c)))
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            n_win = mask.shape[0]
            attn = attn.view(bw // n_win, n_win, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout (timm's Mlp, same parameter names). Without autograd, an exact GELU
    runs as a post-op of fc1's product (`glip.layers.cpu_gemm.linear_gelu`)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (type(self.act) is nn.GELU and self.act.approximate == "none" and not torch.is_grad_enabled()
                and type(self.fc1) in (nn.Linear, OneDNNLinear)):
            x = linear_gelu(x, self.fc1.weight, self.fc1.bias)
        else:
            x = self.act(self.fc1(x))
        return self.drop2(self.fc2(self.drop1(x)))


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block: x + DropPath(W-MSA/SW-MSA(LN(x))), then x + DropPath(MLP(LN(x))).

    The map is zero-padded (after `norm1`) at the bottom/right to a multiple of the window size; shifted blocks
    roll it by -shift_size before partitioning and use the shift mask.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size={window_size})")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size=window_size, num_heads=num_heads, qkv_bias=qkv_bias,
                                    qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor], height: int, width: int) -> torch.Tensor:
        """x: (B, H*W, C); attn_mask: (nW, ws*ws, ws*ws) for the padded map (used when shifted)."""
        b, length, c = x.shape
        if length != height * width:
            raise ValueError(f"input has {length} tokens, expected {height}x{width}")
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(b, height, width, c)
        pad_r = (ws - width % ws) % ws
        pad_b = (ws - height % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1], x.shape[2]
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            mask = attn_mask
        else:
            mask = None
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        windows = self.attn(windows, mask=mask).view(-1, ws, ws, c)
        x = window_reverse(windows, ws, hp, wp)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x[:, :height, :width, :].contiguous()  # no branch on the padding: one exported graph for all sizes
        x = shortcut + self.drop_path(x.view(b, height * width, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (pad odd sizes with zeros) -> LN(4C) -> Linear(4C, 2C, no bias)."""

    def __init__(self, dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)."""
        b, length, c = x.shape
        if length != height * width:
            raise ValueError(f"input has {length} tokens, expected {height}x{width}")
        x = x.view(b, height, width, c)
        if height % 2 == 1 or width % 2 == 1:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = x.view(b, -1, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """One stage (`layers.N`): `depth` blocks alternating regular/shifted windows, then optional patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path=0.0, norm_layer=nn.LayerNorm, downsample: bool = False,
                 use_checkpoint: bool = False):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim=dim, num_heads=num_heads, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                                 qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                                 drop_path=rates[i], norm_layer=norm_layer)
            for i in range(depth)
        ])
        self.downsample = PatchMerging(dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: torch.Tensor, height: int, width: int):
        """x: (B, H*W, C) -> (stage output (B, H*W, C), next input (B, H'*W', C'), H', W')."""
        ws = self.window_size
        # ceil to a multiple of ws written with non-negative operands: ONNX exports `//` as a truncating Div,
        # which rounds -(-h // ws) the wrong way
        hp = (height + ws - 1) // ws * ws
        wp = (width + ws - 1) // ws * ws
        attn_mask = shifted_window_mask(hp, wp, ws, self.shift_size, device=x.device, dtype=x.dtype)
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint.checkpoint(blk, x, attn_mask, height, width, use_reentrant=False)
            else:
                x = blk(x, attn_mask, height, width)
        if self.downsample is None:
            return x, x, height, width
        return x, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size conv (input zero-padded to a multiple) + optional LayerNorm.

    (B, 3, H, W) -> (B, C, ceil(H/p), ceil(W/p)).
    """

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm_layer=None):
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch_size
        height, width = x.shape[-2:]
        if width % pw != 0:
            x = F.pad(x, (0, pw - width % pw))
        if height % ph != 0:
            x = F.pad(x, (0, 0, 0, ph - height % ph))
        x = self.proj(x)
        if self.norm is not None:
            wh, ww = x.shape[-2:]
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(-1, self.embed_dim, wh, ww)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer backbone returning one (B, C_i, H/2^(i+2), W/2^(i+2)) map per stage in `out_features`.

    Stage `i` is named "stage{i+2}" and normalised by `norm{i}`; with a "*RETINANET" `backbone_arch` the stride-4
    output (`norm0`) is an Identity because the P3-P7 FPN never reads it.
    `frozen_stages`: -1 nothing; >= 0 patch embedding; >= 1 the absolute position embedding; >= 2 additionally
    stages 0 .. frozen_stages-2 (requires_grad False and kept in eval mode by `train()`).
    """

    def __init__(self, pretrain_img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.2, norm_layer=nn.LayerNorm, ape: bool = False, patch_norm: bool = True,
                 frozen_stages: int = -1, use_checkpoint: bool = False,
                 out_features: Sequence[str] = ("stage2", "stage3", "stage4", "stage5"),
                 backbone_arch: str = "SWINT-FPN-RETINANET"):
        super().__init__()
        logger.info("Swin backbone: gradient checkpointing %s", use_checkpoint)
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.frozen_stages = frozen_stages
        self.out_features = list(out_features)

        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                      norm_layer=norm_layer if patch_norm else None)
        if ape:
            img = to_2tuple(pretrain_img_size)
            patch = to_2tuple(patch_size)
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, embed_dim, img[0] // patch[0], img[1] // patch[1]))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [float(r) for r in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.num_features = [int(embed_dim * 2 ** i) for i in range(self.num_layers)]
        self._out_feature_channels = {}
        self._out_feature_strides = {}
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(SwinStage(
                dim=self.num_features[i], depth=depths[i], num_heads=num_heads[i], window_size=window_size,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                attn_drop=attn_drop_rate, drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                norm_layer=norm_layer, downsample=i < self.num_layers - 1,
                use_checkpoint=use_checkpoint and i > frozen_stages - 1))
            stage = f"stage{i + 2}"
            if stage in self.out_features:
                self._out_feature_channels[stage] = self.num_features[i]
                self._out_feature_strides[stage] = patch_size * 2 ** i
        for i in range(self.num_layers):
            if f"stage{i + 2}" in self.out_features:
                skip = i == 0 and backbone_arch.endswith("RETINANET")
                self.add_module(f"norm{i}", nn.Identity() if skip else norm_layer(self.num_features[i]))
        self.init_weights()
        self._freeze_stages()

    def init_weights(self):
        """Swin initialisation: Linear weights trunc-normal(0.02) with zero bias, LayerNorm (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for p in self.patch_embed.parameters():
                p.requires_grad = False
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            self.pos_drop.eval()
            for i in range(0, self.frozen_stages - 1):
                self.layers[i].eval()
                for p in self.layers[i].parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True):
        """Switch mode but keep frozen stages in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x: (B, 3, H, W) -> list of (B, C_i, H_i, W_i) for the requested stages (stride 4, 8, 16, 32)."""
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(height, width), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs = []
        for i, layer in enumerate(self.layers):
            x_out, x, next_h, next_w = layer(x, height, width)
            if f"stage{i + 2}" in self.out_features:
                x_out = getattr(self, f"norm{i}")(x_out)
                outs.append(x_out.view(-1, height, width, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
            height, width = next_h, next_w
        return outs


def build_swint_backbone(cfg) -> SwinTransformer:
    """SwinTransformer from cfg.MODEL.SWINT.* and cfg.MODEL.BACKBONE.* (as the reference's `swint` builder)."""
    return SwinTransformer(
        patch_size=4,
        in_chans=3,
        embed_dim=cfg.MODEL.SWINT.EMBED_DIM,
        depths=list(cfg.MODEL.SWINT.DEPTHS),
        num_heads=list(cfg.MODEL.SWINT.NUM_HEADS),
        window_size=cfg.MODEL.SWINT.WINDOW_SIZE,
        mlp_ratio=cfg.MODEL.SWINT.MLP_RATIO,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=cfg.MODEL.SWINT.DROP_PATH_RATE,
        norm_layer=nn.LayerNorm,
        ape=cfg.MODEL.SWINT.APE,
        patch_norm=True,
        frozen_stages=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT,
        backbone_arch=cfg.MODEL.BACKBONE.CONV_BODY,
        use_checkpoint=cfg.MODEL.BACKBONE.USE_CHECKPOINT,
        out_features=list(cfg.MODEL.BACKBONE.OUT_FEATURES),
    )
