"""Blocked evaluation of GLIP's bidirectional fusion attention: at inference (`bi_attention_blocks`, no autograd)
and in training (`blocked_bi_attention`, an autograd function whose backward recomputes the blocks).

`bi_attention_blocks` takes the text-side operands already folded into the visual side (all heads side by side,
see `glip.modeling.head.fusion.BiMultiHeadAttention._forward_blocked`) and walks the N visual rows in blocks, so
that no (heads, N, T) map is ever materialised:

    A = v q_t + q_b                  logits of a block of rows, (rows, W) with W = heads * T, clamped as asked
    image side: per head, softmax over its valid tokens of (A + bias_v); delta_v = out_bias + P_v u
    text side:  P_l = softmax of every column of A over all N rows, accumulated as an online softmax
                (running column max and sum, E^T v rescaled whenever the max grows); returns P_l^T v.

The compiled kernel (`glip._C.bi_attention_forward`, CPU; called as the torch operator
`torch.ops.glip.bi_attention_forward`, which carries a FLOP formula) gives each thread whole blocks and merges
the threads' online-softmax states at the end; the PyTorch fallback runs the same steps block after block. Both
agree with the unblocked formulation up to fp32 rounding (summation order).
"""
from typing import Optional, Tuple

import torch
from torch.utils.flop_counter import register_flop_formula

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


@torch.library.custom_op("glip::bi_attention_forward", mutates_args=())
def _bi_attention_kernel(v: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor, u: torch.Tensor,
                         bias_v: torch.Tensor, out_bias: torch.Tensor, heads: int, clamp_min: bool, clamp_max: bool,
                         clamp_limit: float, block_rows: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The compiled kernel as a torch operator (so that dispatch modes, e.g. FlopCounterMode, see it); bias_v
    empty for none."""
    return extension.load().bi_attention_forward(v, q_t, q_b, u, bias_v, out_bias, heads, clamp_min, clamp_max,
                                                 clamp_limit, block_rows)


@_bi_attention_kernel.register_fake
def _(v, q_t, q_b, u, bias_v, out_bias, heads, clamp_min, clamp_max, clamp_limit, block_rows):
    return v.new_empty(v.shape), v.new_empty(q_t.shape[1], v.shape[1])


@register_flop_formula(torch.ops.glip.bi_attention_forward)
def bi_attention_kernel_flops(v_shape, q_t_shape, q_b_shape, u_shape, *args, out_shape=None, **kwargs) -> int:
    """Matrix-product FLOPs of the blocked pass: logits v q_t, image side P_v u, text side E^T v."""
    (n_vis, dim), width, valid_width = v_shape, q_t_shape[1], u_shape[0]
    return 2 * n_vis * dim * (2 * width + valid_width)


def bi_attention_blocks(v: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor, u: torch.Tensor,
                        bias_v: Optional[torch.Tensor], out_bias: torch.Tensor, heads: int, clamp_min: bool,
                        clamp_max: bool, block_rows: int = 256, use_kernel: bool = True
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Blocked fusion attention of one image (see the module docstring); no autograd.

    Args:
        v: (N, D) visual rows. q_t: (D, W) folded queries, W = heads * T, columns [valid tokens of every head |
            padded tokens of every head]. q_b: (W,) their bias. u: (heads * T_valid, D) folded values of the valid
            columns (out_v_proj included). bias_v: (heads * T_valid,) text bias added before the image-side
            softmax, or None. out_bias: (D,) bias of delta_v. heads: number of heads. clamp_min / clamp_max:
            clamp the logits to [-50000, 50000]. block_rows: visual rows per block. use_kernel: False runs the
            PyTorch fallback even where the compiled kernel is available (side-by-side benchmarks).
    Returns:
        delta_v (N, D) and P_l^T v (W, D) in column order.
    """
    ext = extension.load()
    if use_kernel and ext is not None and v.device.type == "cpu" and hasattr(ext, "bi_attention_forward"):
        empty = v.new_empty(0)
        return _bi_attention_kernel(v, q_t, q_b, u, empty if bias_v is None else bias_v, out_bias, heads,
                                    clamp_min, clamp_max, CLAMP_LIMIT, int(block_rows))
    return _bi_attention_blocks_torch(v, q_t, q_b, u, bias_v, out_bias, heads, clamp_min, clamp_max, block_rows)


def _logits(vb: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor, clamp_min: bool, clamp_max: bool):
    """Clamped logits of a block (rows, W), and the mask of entries the clamps cut (their gradient is 0) or None."""
    attn = torch.addmm(q_b, vb, q_t)
    if not (clamp_min or clamp_max):
        return attn, None
    cut = None
    if clamp_min:
        cut = attn < -CLAMP_LIMIT
    if clamp_max:
        cut = attn > CLAMP_LIMIT if cut is None else cut | (attn > CLAMP_LIMIT)
    return attn.clamp_(min=-CLAMP_LIMIT if clamp_min else None, max=CLAMP_LIMIT if clamp_max else None), cut


def _image_probs(attn: torch.Tensor, bias_v: Optional[torch.Tensor], heads: int, valid_width: int) -> torch.Tensor:
    """Per-head softmax over the valid columns of (logits + bias_v): (rows, valid_width)."""
    logits = attn[:, :valid_width] if bias_v is None else torch.add(attn[:, :valid_width], bias_v)
    return logits.reshape(-1, heads, valid_width // heads).softmax(dim=-1).view(-1, valid_width)


class _BlockedBiAttention(torch.autograd.Function):
    """Differentiable blocked attention (training): forward as `bi_attention_blocks` plus attention dropout; the
    backward recomputes the logits block by block from the saved column statistics (no (N, W) map is kept)."""

    @staticmethod
    def forward(ctx, v, q_t, q_b, u, out_bias, bias_v, heads, clamp_min, clamp_max, dropout, block_rows, generator):
        n_vis, dim = v.shape
        width, valid_width = q_t.shape[1], u.shape[0]
        keep = 1.0 - dropout
        masks_l = v.new_empty(n_vis, width, dtype=torch.bool) if dropout > 0 else None
        masks_v = v.new_empty(n_vis, valid_width, dtype=torch.bool) if dropout > 0 else None
        col_max, col_sum = v.new_full((width,), float("-inf")), v.new_zeros(width)
        acc, mass = v.new_zeros(width, dim), v.new_zeros(width)
        delta_v = v.new_empty(n_vis, dim)
        for start in range(0, n_vis, block_rows):
            rows = slice(start, start + block_rows)
            vb = v[rows]
            attn, _ = _logits(vb, q_t, q_b, clamp_min, clamp_max)
            p_v = _image_probs(attn, bias_v, heads, valid_width)
            if masks_v is not None:
                masks_v[rows] = torch.rand(p_v.shape, generator=generator, device=v.device) < keep
                p_v = p_v * masks_v[rows] / keep
            torch.addmm(out_bias, p_v, u, out=delta_v[rows])
            new_max = torch.maximum(col_max, attn.amax(dim=0))
            rescale = torch.exp(col_max - new_max)
            col_max = new_max
            e = torch.sub(attn, new_max).exp_()
            col_sum.mul_(rescale).add_(e.sum(dim=0))
            if masks_l is not None:
                masks_l[rows] = torch.rand(e.shape, generator=generator, device=v.device) < keep
                e = e * masks_l[rows]
            mass.mul_(rescale).add_(e.sum(dim=0))
            acc.mul_(rescale[:, None]).addmm_(e.t(), vb)
        scale = 1.0 / (col_sum * keep)
        pooled, mass = acc * scale[:, None], mass * scale
        ctx.conf = (heads, clamp_min, clamp_max, keep, block_rows)
        ctx.save_for_backward(v, q_t, q_b, u, bias_v, col_max, scale, pooled, mass, masks_l, masks_v)
        return delta_v, pooled, mass

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_delta, g_pooled, g_mass):
        v, q_t, q_b, u, bias_v, col_max, scale, pooled, mass, masks_l, masks_v = ctx.saved_tensors
        heads, clamp_min, clamp_max, keep, block_rows = ctx.conf
        valid_width = u.shape[0]
        g_delta = g_delta.contiguous()
        g_mass = torch.zeros_like(mass) if g_mass is None else g_mass
        g_pooled = torch.zeros_like(pooled) if g_pooled is None else g_pooled
        # softmax over the rows: sum_i P_l[i, c] dP_l[i, c] = pooled_c . g_pooled_c + mass_c g_mass_c
        text_dot = (pooled * g_pooled).sum(dim=1) + mass * g_mass
        prob_scale = scale * keep  # 1 / column sum
        grad_v, grad_q_t = torch.empty_like(v), torch.zeros_like(q_t)
        grad_q_b, grad_u = torch.zeros_like(q_b), torch.zeros_like(u)
        for start in range(0, v.shape[0], block_rows):
            rows = slice(start, start + block_rows)
            vb, gb = v[rows], g_delta[rows]
            attn, cut = _logits(vb, q_t, q_b, clamp_min, clamp_max)
            p_l = torch.sub(attn, col_max).exp_().mul_(prob_scale)                     # (rows, W)
            g_l = torch.addmm(g_mass, vb, g_pooled.t())                                # dL/dP_l' (rows, W)
            p_v = _image_probs(attn, bias_v, heads, valid_width)
            g_v = torch.mm(gb, u.t())                                                   # dL/dP_v' (rows, Wv)
            if masks_l is not None:
                kept_l, kept_v = masks_l[rows] / keep, masks_v[rows] / keep
                g_l.mul_(kept_l)
                g_v.mul_(kept_v)
                torch.mm(p_l * kept_l, g_pooled, out=grad_v[rows])
                grad_u.addmm_((p_v * kept_v).t(), gb)
            else:
                torch.mm(p_l, g_pooled, out=grad_v[rows])
                grad_u.addmm_(p_v.t(), gb)
            grad_attn = g_l.sub_(text_dot).mul_(p_l)
            per_head = g_v.mul_(p_v).view(-1, heads, valid_width // heads)                # P_v dP_v
            per_head.sub_(p_v.view_as(per_head) * per_head.sum(dim=-1, keepdim=True))
            grad_attn[:, :valid_width] += g_v
            if cut is not None:
                grad_attn.masked_fill_(cut, 0.0)
            grad_v[rows].addmm_(grad_attn, q_t.t())
            grad_q_t.addmm_(vb.t(), grad_attn)
            grad_q_b.add_(grad_attn.sum(dim=0))
        return (grad_v, grad_q_t, grad_q_b, grad_u, g_delta.sum(dim=0), None, None, None, None, None, None, None)


def blocked_bi_attention(v: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor, u: torch.Tensor,
                         bias_v: Optional[torch.Tensor], out_bias: torch.Tensor, heads: int, clamp_min: bool,
                         clamp_max: bool, dropout: float = 0.0, block_rows: int = 256,
                         generator: Optional[torch.Generator] = None):
    """Differentiable blocked fusion attention of one image (training), same operands as `bi_attention_blocks`.

    Attention dropout (probability `dropout`, drawn from `generator` or the default CPU generator, so that
    gradient checkpointing replays it) is applied to both softmax maps as `F.dropout` does. Returns delta_v
    (N, D), pooled = P_l'^T v (W, D) and mass = P_l'^T 1 (W,), the column sums of the dropped-out text-side map
    (1 up to rounding without dropout), which the caller needs for the bias of the folded value projection.
    """
    return _BlockedBiAttention.apply(v, q_t, q_b, u, out_bias, bias_v, heads, clamp_min, clamp_max, float(dropout),
                                     max(1, int(block_rows)), generator)
