"""Blocked evaluation of GLIP's bidirectional fusion attention at inference (no autograd).

`bi_attention_blocks` takes the text-side operands already folded into the visual side (all heads side by side,
see `glip.modeling.head.fusion.BiMultiHeadAttention._forward_blocked`) and walks the N visual rows in blocks, so
that no (heads, N, T) map is ever materialised:

    A = v q_t + q_b                  logits of a block of rows, (rows, W) with W = heads * T, clamped as asked
    image side: per head, softmax over its valid tokens of (A + bias_v); delta_v = out_bias + P_v u
    text side:  P_l = softmax of every column of A over all N rows, accumulated as an online softmax
                (running column max and sum, E^T v rescaled whenever the max grows); returns P_l^T v.

The compiled kernel (`glip._C.bi_attention_forward`, CPU) gives each thread whole blocks and merges the threads'
online-softmax states at the end; the PyTorch fallback runs the same steps block after block. Both agree with
the unblocked formulation up to fp32 rounding (summation order).
"""
from typing import Optional, Tuple

import torch

from glip.layers import extension

CLAMP_LIMIT = 50000.0


def _bi_attention_blocks_torch(v: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor, u: torch.Tensor,
                               bias_v: Optional[torch.Tensor], out_bias: torch.Tensor, heads: int,
                               clamp_min: bool, clamp_max: bool, block_rows: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch fallback of `bi_attention_blocks` (same arguments and results)."""
    n_vis, dim = v.shape
    width, valid_width = q_t.shape[1], u.shape[0]
    col_max = v.new_full((width,), float("-inf"))
    col_sum = v.new_zeros(width)
    acc = v.new_zeros(width, dim)
    delta_v = v.new_empty(n_vis, dim)
    lo = -CLAMP_LIMIT if clamp_min else None
    hi = CLAMP_LIMIT if clamp_max else None
    rows = max(1, int(block_rows))
    for start in range(0, n_vis, rows):
        vb = v[start:start + rows]
        attn = torch.addmm(q_b, vb, q_t)                                                   # (rows, W)
        if clamp_min or clamp_max:
            attn.clamp_(min=lo, max=hi)
        logits = attn[:, :valid_width] if bias_v is None else torch.add(attn[:, :valid_width], bias_v)
        p_v = logits.reshape(-1, heads, valid_width // heads).softmax(dim=-1).view(-1, valid_width)
        torch.addmm(out_bias, p_v, u, out=delta_v[start:start + rows])
        new_max = torch.maximum(col_max, attn.amax(dim=0))
        rescale = torch.exp(col_max - new_max)
        col_max = new_max
        e = torch.sub(attn, new_max).exp_()
        col_sum.mul_(rescale).add_(e.sum(dim=0))
        acc.mul_(rescale[:, None]).addmm_(e.t(), vb)
    return delta_v, acc / col_sum[:, None]


def bi_attention_blocks(v: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor, u: torch.Tensor,
                        bias_v: Optional[torch.Tensor], out_bias: torch.Tensor, heads: int, clamp_min: bool,
                        clamp_max: bool, block_rows: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """Blocked fusion attention of one image (see the module docstring); no autograd.

    Args:
        v: (N, D) visual rows. q_t: (D, W) folded queries, W = heads * T, columns [valid tokens of every head |
            padded tokens of every head]. q_b: (W,) their bias. u: (heads * T_valid, D) folded values of the valid
            columns (out_v_proj included). bias_v: (heads * T_valid,) text bias added before the image-side
            softmax, or None. out_bias: (D,) bias of delta_v. heads: number of heads. clamp_min / clamp_max:
            clamp the logits to [-50000, 50000]. block_rows: visual rows per block.
    Returns:
        delta_v (N, D) and P_l^T v (W, D) in column order.
    """
    ext = extension.load()
    if ext is not None and v.device.type == "cpu" and hasattr(ext, "bi_attention_forward"):
        empty = v.new_empty(0)
        return ext.bi_attention_forward(v, q_t, q_b, u, empty if bias_v is None else bias_v, out_bias, heads,
                                        clamp_min, clamp_max, CLAMP_LIMIT, int(block_rows))
    return _bi_attention_blocks_torch(v, q_t, q_b, u, bias_v, out_bias, heads, clamp_min, clamp_max, block_rows)
