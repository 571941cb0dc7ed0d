"""Loader of the optional compiled ops (`glip._C`) and autograd-capable wrappers around them.

`load()` returns the module, or None when it is not built, fails to import, or GLIP_DISABLE_EXT=1. Callers
dispatch with `if extension.supports(device):` (CPU; CUDA when built with it) and fall back to PyTorch.
"""
import functools
import logging
import os

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def load():
    """The `glip._C` module, or None (not built, failed to import, or GLIP_DISABLE_EXT=1)."""
    if os.environ.get("GLIP_DISABLE_EXT", "0") not in ("", "0"):
        return None
    try:
        from glip import _C  # noqa: F401
    except ImportError as err:
        logger.debug("glip._C not available (%s); using the PyTorch fallbacks", err)
        return None
    return _C


def supports(device: torch.device) -> bool:
    """Whether the compiled ops can run on tensors of `device`: CPU when built, CUDA when built with CUDA."""
    ext = load()
    if ext is None:
        return False
    if device.type == "cpu":
        return True
    return device.type == "cuda" and bool(getattr(ext, "with_cuda", lambda: False)())


def _require():
    ext = load()
    if ext is None:
        raise RuntimeError("glip._C is not available (not built, or disabled with GLIP_DISABLE_EXT=1)")
    return ext


def _fit_to_output(maps: torch.Tensor, channels: int, out_h: int, out_w: int) -> torch.Tensor:
    """Offsets/masks larger than the output, read per image as raw memory like the reference's CUDA kernel.

    (B, channels, H', W') with H'*W' >= out_h*out_w -> (B, channels, out_h, out_w) taken from the first
    channels*out_h*out_w values of each image's block; maps of the output size are returned unchanged.
    """
    if maps.shape[-2:] == (out_h, out_w):
        return maps
    batch = maps.shape[0]
    needed = channels * out_h * out_w
    if maps.dim() != 4 or maps[0].numel() < needed:
        raise ValueError(f"offset/mask of shape {tuple(maps.shape)} cannot cover an output of {out_h}x{out_w}")
    return maps.reshape(batch, -1)[:, :needed].reshape(batch, channels, out_h, out_w)


class _ModulatedDeformConv(Function):
    """DCNv2 over the compiled kernels; offsets/masks must already have the output's spatial size."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
        ext = _require()
        ctx.conf = (*stride, *padding, *dilation, groups, deformable_groups)
        ctx.has_bias = bias is not None
        bias_arg = bias if bias is not None else input.new_empty(0)
        ctx.save_for_backward(input, offset, mask, weight, bias_arg)
        return ext.deform_conv_forward(input, offset, mask, weight, bias_arg, *ctx.conf)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, offset, mask, weight, bias = ctx.saved_tensors
        grads = _require().deform_conv_backward(grad_output, input, offset, mask, weight, bias, *ctx.conf)
        grad_input, grad_offset, grad_mask, grad_weight, grad_bias = grads
        return (grad_input, grad_offset, grad_mask, grad_weight, grad_bias if ctx.has_bias else None,
                None, None, None, None, None)


def modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                          deformable_groups=1):
    """Modulated deformable convolution (DCNv2) with the compiled kernels (CPU, and CUDA when built).

    input (B, C, H, W); offset (B, 2*dg*kh*kw, Ho, Wo), (dy, dx) interleaved per kernel tap; mask
    (B, dg*kh*kw, Ho, Wo) (already sigmoid-ed); weight (Cout, C/groups, kh, kw); bias (Cout) or None.
    Returns (B, Cout, Ho, Wo). Offset/mask maps larger than the output are reinterpreted like the reference.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = weight.shape[-2:]
    out_h = (input.shape[2] + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (input.shape[3] + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    taps = deformable_groups * kh * kw
    offset = _fit_to_output(offset, 2 * taps, out_h, out_w)
    mask = _fit_to_output(mask, taps, out_h, out_w)
    return _ModulatedDeformConv.apply(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                                      deformable_groups)


def ml_nms(boxes, scores, labels, threshold):
    """Multi-label NMS: kept indices (int64) of boxes (N, 4) xyxy in descending score order (stable).

    A box suppresses lower-scored boxes of the same label whose IoU (widths +1) is strictly above threshold.
    """
    return _require().ml_nms(boxes, scores, labels, float(threshold))


def column_softmax_step(block, col_max, col_sum):
    """One block step of an online softmax over the rows, per column, in place (CPU, contiguous float32):
    block (rows, W) -> exp(block - m'), m' = max(col_max, column max of block); col_sum -> col_sum * exp(col_max -
    m') + the new column sums; col_max -> m'. Returns exp(old col_max - m') (W,)."""
    return _require().column_softmax_step(block, col_max, col_sum)

