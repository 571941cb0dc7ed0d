"""Modulated deformable convolution (DCNv2) with the semantics of GLIP's CUDA kernel.

For output location (y, x) and kernel tap k = i * kw + j of deformable group g, the kernel samples the input at
`(y * stride - pad + i * dilation + dy, x * stride - pad + j * dilation + dx)`, where `dy` / `dx` are offset
channels `2 * (g * K + k)` / `2 * (g * K + k) + 1` (interleaved (dy, dx) per tap, the same layout as
`torchvision.ops.deform_conv2d`), bilinearly with zeros outside the image (a sample is zero unless
`-1 < py < H` and `-1 < px < W`), multiplies it by mask channel `g * K + k` and then applies an ordinary
(grouped) convolution weight.

The compiled extension (`glip.layers.extension`) is used when available; otherwise an exact pure-PyTorch
formulation (bilinear gather + one matrix product) runs, which autograd differentiates.

Export only (`torch.export`, and so `torch.onnx.export`): while `torch.compiler.is_exporting()`, the same
computation runs as the opaque custom op `glip::modulated_deform_conv`, which `glip.export` translates to ONNX
`DeformConv` (same offset layout and boundary rule). Eager calls never take that path.
"""
import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from glip.layers import extension

IntPair = Union[int, Tuple[int, int]]


def conv_output_size(in_size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Spatial output length of a convolution along one axis."""
    return (in_size + 2 * padding - (dilation * (kernel - 1) + 1)) // stride + 1


def reinterpret_as_output_size(t: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
    """Read a per-location map (B, C, H', W') computed for a larger grid as the kernel does: as raw memory.

    GLIP's CUDA kernel never checks the offset/mask shape; it walks each image's block assuming the layout
    (C, H_out, W_out). DyConv feeds the offsets computed on level l to the conv of the coarser level l + 1, so the
    kernel reads the first C * H_out * W_out values of every image's block, i.e.
    `t.reshape(B, -1)[:, :C * H_out * W_out].reshape(B, C, H_out, W_out)`. The released weights were trained with
    this behaviour, so it is reproduced. Maps already of the output size are returned unchanged.

    Args:
        t: (B, C, H', W') offsets or mask.
        out_hw: (H_out, W_out) of the convolution output.
    Returns:
        (B, C, H_out, W_out).
    """
    b, c, h, w = t.shape
    out_h, out_w = out_hw
    if (h, w) == (out_h, out_w):
        return t
    needed = c * out_h * out_w
    if h * w < out_h * out_w:
        raise ValueError(
            f"offset/mask map {tuple(t.shape)} is smaller than the convolution output {out_hw}; the reference kernel"
            " would read past the end of each image's block"
        )
    return t.reshape(b, -1)[:, :needed].reshape(b, c, out_h, out_w)


def _sampling_taps(
    offset: torch.Tensor,
    kernel: Tuple[int, int],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    deformable_groups: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Absolute sampling positions (py, px), each (B, dg, Ho*Wo, K) in input pixels, from the offsets."""
    b, _, out_h, out_w = offset.shape
    kh, kw = kernel
    n_taps = kh * kw
    dev, dt = offset.device, offset.dtype
    base_y = (torch.arange(out_h, device=dev, dtype=dt) * stride[0] - padding[0]).view(out_h, 1, 1, 1)
    base_x = (torch.arange(out_w, device=dev, dtype=dt) * stride[1] - padding[1]).view(1, out_w, 1, 1)
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dilation[0]).view(1, 1, kh, 1)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dilation[1]).view(1, 1, 1, kw)
    grid_y = (base_y + tap_y).expand(out_h, out_w, kh, kw).reshape(out_h * out_w, n_taps)
    grid_x = (base_x + tap_x).expand(out_h, out_w, kh, kw).reshape(out_h * out_w, n_taps)
    # (B, dg, K, 2, Ho, Wo) -> (B, dg, Ho*Wo, K, 2)
    off = offset.view(b, deformable_groups, n_taps, 2, out_h * out_w).permute(0, 1, 4, 2, 3)
    return grid_y + off[..., 0], grid_x + off[..., 1]


def _bilinear_columns(
    input: torch.Tensor, py: torch.Tensor, px: torch.Tensor, mask: torch.Tensor, deformable_groups: int
) -> torch.Tensor:
    """Masked bilinear samples of `input` (B, C, H, W) at (py, px) (B, dg, P, K) -> columns (B, P, K, C).

    Each sample is a weighted sum of (at most) four pixel rows of a channels-last table, which
    `F.embedding_bag(mode="sum", per_sample_weights=...)` computes in one fused, differentiable pass. Corners
    outside the image get weight 0 (zero padding), and so does the whole sample unless -1 < py < H and
    -1 < px < W, exactly as the CUDA kernel.
    """
    b, c, h, w = input.shape
    dg = deformable_groups
    cg = c // dg
    _, _, n_pos, n_taps = py.shape
    # rows of (B * dg * H * W, C / dg): one per pixel and deformable group
    table = input.reshape(b, dg, cg, h * w).transpose(2, 3).reshape(b * dg * h * w, cg)
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly = py - y0
    lx = px - x0
    y0 = y0.long()
    x0 = x0.long()
    # per axis: (low, high) corner weights, validity and clamped coordinates; `p > -1` on the high corner is
    # the kernel's "sample inside (-1, size)" test (the low corner's own test already implies it)
    wy = torch.stack((1 - ly, ly), dim=-1) * torch.stack(((y0 >= 0) & (y0 < h), (py > -1) & (y0 < h - 1)), -1)
    wx = torch.stack((1 - lx, lx), dim=-1) * torch.stack(((x0 >= 0) & (x0 < w), (px > -1) & (x0 < w - 1)), -1)
    iy = torch.stack((y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1)), dim=-1) * w
    ix = torch.stack((x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)), dim=-1)
    iy = iy + (torch.arange(b * dg, device=input.device) * (h * w)).view(b, dg, 1, 1, 1)
    # corners in the kernel's order (y0, x0), (y0, x1), (y1, x0), (y1, x1)
    index = (iy.unsqueeze(-1) + ix.unsqueeze(-2)).reshape(-1, 4)
    coef = ((wy * mask.unsqueeze(-1)).unsqueeze(-1) * wx.unsqueeze(-2)).reshape(-1, 4)
    columns = F.embedding_bag(index, table, per_sample_weights=coef, mode="sum")
    # (B, dg, P, K, Cg) -> (B, P, K, C) with channel c = g * Cg + c'
    return columns.view(b, dg, n_pos, n_taps, cg).permute(0, 2, 3, 1, 4).reshape(b, n_pos, n_taps, c)


def _modulated_deform_conv_torch(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    groups: int,
    deformable_groups: int,
) -> torch.Tensor:
    """Pure-PyTorch DCNv2: gather the masked bilinear columns (B, Ho*Wo, K, C), then one (grouped) matmul."""
    b, c = input.shape[:2]
    out_c, cin_g, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    n_taps = kh * kw
    py, px = _sampling_taps(offset, (kh, kw), stride, padding, dilation, deformable_groups)
    m = mask.view(b, deformable_groups, n_taps, out_h * out_w).transpose(2, 3)
    columns = _bilinear_columns(input, py, px, m, deformable_groups)
    if groups == 1:
        w2d = weight.permute(0, 2, 3, 1).reshape(out_c, n_taps * c)
        out = torch.matmul(w2d, columns.reshape(b, out_h * out_w, n_taps * c).transpose(1, 2))
    else:
        cols = columns.view(b, out_h * out_w, n_taps, groups, cin_g).permute(0, 3, 1, 2, 4)
        cols = cols.reshape(b, groups, out_h * out_w, n_taps * cin_g)
        wg = weight.reshape(groups, out_c // groups, cin_g, n_taps).transpose(2, 3).reshape(groups, out_c // groups, -1)
        out = torch.matmul(wg.unsqueeze(0), cols.transpose(2, 3)).reshape(b, out_c, out_h * out_w)
    if bias is not None:
        out = out + bias.view(1, out_c, 1)
    return out.view(b, out_c, out_h, out_w)


def _float32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t.float() if t is not None and t.is_floating_point() else t


def _extension_op(input: torch.Tensor):
    """The compiled `extension.modulated_deform_conv`, or None when not built / not usable for this tensor."""
    if not extension.supports(input.device):
        return None
    return getattr(extension, "modulated_deform_conv", None)


@torch.library.custom_op("glip::modulated_deform_conv", mutates_args=())
def exportable_deform_conv(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    deformable_groups: int,
) -> torch.Tensor:
    """The export-time op: DCNv2 with offset/mask already of the output size (see `modulated_deform_conv`)."""
    op = _extension_op(input)
    if op is not None:
        return op(input, offset, mask, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups,
                  deformable_groups)
    return _modulated_deform_conv_torch(input, offset, mask, weight, bias, tuple(stride), tuple(padding),
                                        tuple(dilation), groups, deformable_groups)


@exportable_deform_conv.register_fake
def _(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


def modulated_deform_conv(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    deformable_groups: int = 1,
) -> torch.Tensor:
    """DCNv2 forward with the reference's name, argument order and CUDA-kernel semantics (differentiable).

    Args:
        input: (B, C_in, H, W).
        offset: (B, 2 * deformable_groups * kh * kw, H', W'), interleaved (dy, dx) per tap; (H', W') is the
            output size or a larger map, read as raw memory (see `reinterpret_as_output_size`).
        mask: (B, deformable_groups * kh * kw, H', W') modulation (already sigmoid-ed).
        weight: (C_out, C_in / groups, kh, kw); bias: (C_out,) or None.
    Returns:
        (B, C_out, H_out, W_out).
    """
    if input.dim() != 4:
        raise ValueError(f"expected a 4D input, got shape {tuple(input.shape)}")
    stride2, padding2, dilation2 = _pair(stride), _pair(padding), _pair(dilation)
    out_c, cin_g, kh, kw = weight.shape
    n_taps = kh * kw
    if input.shape[1] != cin_g * groups or input.shape[1] % deformable_groups:
        raise ValueError(
            f"input channels {input.shape[1]} do not match weight {tuple(weight.shape)} with groups={groups} "
            f"and deformable_groups={deformable_groups}"
        )
    if offset.shape[1] != 2 * deformable_groups * n_taps or mask.shape[1] != deformable_groups * n_taps:
        raise ValueError(
            f"offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not have 2*dg*K / dg*K channels "
            f"(dg={deformable_groups}, K={n_taps})"
        )
    out_hw = tuple(
        conv_output_size(input.shape[2 + d], weight.shape[2 + d], stride2[d], padding2[d], dilation2[d])
        for d in (0, 1)
    )
    if min(out_hw) <= 0:
        raise ValueError(f"convolution input {tuple(input.shape)} is too small (output would be {out_hw})")
    offset = reinterpret_as_output_size(offset, out_hw)
    mask = reinterpret_as_output_size(mask, out_hw)
    if torch.is_autocast_enabled(input.device.type):  # the reference casts DCN inputs to fp32 under autocast
        with torch.autocast(input.device.type, enabled=False):
            return modulated_deform_conv(*(_float32(t) for t in (input, offset, mask, weight, bias)), stride,
                                         padding, dilation, groups, deformable_groups)

    if torch.compiler.is_exporting():
        return exportable_deform_conv(input, offset.contiguous(), mask.contiguous(), weight, bias, list(stride2),
                                      list(padding2), list(dilation2), groups, deformable_groups)
    op = _extension_op(input)
    if op is not None:
        return op(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups)
    return _modulated_deform_conv_torch(
        input, offset.contiguous(), mask.contiguous(), weight, bias, stride2, padding2, dilation2, groups,
        deformable_groups,
    )


class ModulatedDeformConv(nn.Module):
    """DCNv2 layer holding `weight` (C_out, C_in / groups, kh, kw) and optional `bias` (C_out,).

    `forward(input (B, C_in, H, W), offset, mask) -> (B, C_out, H_out, W_out)`; offset/mask as in
    `modulated_deform_conv`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} are not divisible by groups={groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.with_bias = bias
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Uniform(+-1/sqrt(C_in * kh * kw)) weight and zero bias, as the reference."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return modulated_deform_conv(
            input, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
            self.deformable_groups,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.with_bias}"
        )
