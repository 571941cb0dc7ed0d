"""Blocked evaluation of GLIP's bidirectional fusion attention: `blocked_bi_attention` for training (an autograd
function whose backward recomputes the blocks) and `bi_attention_inference` (no autograd, products through oneDNN).

The text-side operands come folded into the visual side (all heads side by side, see
`glip.modeling.head.fusion.BiMultiHeadAttention._forward_fused`); the N visual rows are walked in blocks, so that
no (heads, N, T) map is ever materialised:

    A = v q_t + q_b                  logits of a block of rows, (rows, W) with W = heads * T, clamped as asked
    image side: per head, softmax over its valid tokens of (A + bias_v); delta_v = out_bias + P_v u
    text side:  P_l = softmax of every column of A over all N rows, accumulated as an online softmax
                (running column max and sum, E^T v rescaled whenever the max grows); returns P_l^T v.

Same values and gradients as the unblocked formulation up to fp32 rounding (summation order).
"""
from typing import Optional

import torch

from glip.layers import extension
from glip.layers.cpu_gemm import linear, t_matmul

CLAMP_LIMIT = 50000.0


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


def clamp_may_bite(v: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor) -> bool:
    """Whether some |v_i . q_j + b_j| could reach CLAMP_LIMIT (Cauchy-Schwarz bound over the rows of v (N, D) and the
    columns of q_t (D, W), with a margin for rounding); a non-finite bound counts as reaching it."""
    if v.numel() == 0 or q_t.numel() == 0:
        return False
    bound = float(v.norm(dim=1).max() * q_t.norm(dim=0).max() + q_b.abs().max())
    return not bound * 1.01 < CLAMP_LIMIT


def bi_attention_inference(v: torch.Tensor, q_t: torch.Tensor, q_b: torch.Tensor, u: torch.Tensor,
                           bias_v: Optional[torch.Tensor], out_bias: torch.Tensor, heads: int, clamp_min: bool,
                           clamp_max: bool, block_rows: int = 1024):
    """Inference evaluation of one image (no autograd), same operands and results as `blocked_bi_attention`
    without dropout: returns delta_v (N, D) and pooled = P_l^T v (W, D).

    Blocks of `block_rows` visual rows; all products through `glip.layers.cpu_gemm` (oneDNN on the CPU). The
    text-side sum is kept transposed, (D, W), so that E^T v of a block is read from the (rows, W) map in place.
    The clamps run only when the bound of `clamp_may_bite` says they could change something, and a bias_v of ones
    (the reference's +1 on every valid token) is skipped: the softmax ignores a shift (not so the -9e15 of an image
    without valid tokens, which in fp32 wipes the logits out and gives uniform weights)."""
    n_vis, dim = v.shape
    width, valid_width = q_t.shape[1], u.shape[0]
    if bias_v is not None and bool((bias_v == 1).all()):
        bias_v = None
    clamping = (clamp_min or clamp_max) and clamp_may_bite(v, q_t, q_b)
    q_w, u_t = q_t.t().contiguous(), u.t().contiguous()                             # (W, D), (D, Wv)
    # the valid columns [:Wv] and the padded ones [Wv:] as two maps, so that the image side reads a contiguous one
    parts = [slice(0, valid_width)] + ([slice(valid_width, width)] if valid_width < width else [])
    stats = [(v.new_full((p.stop - p.start,), float("-inf")), v.new_zeros(p.stop - p.start),
              v.new_zeros(dim, p.stop - p.start)) for p in parts]                  # column max, sum, (E^T v)^T
    delta_v = v.new_empty(n_vis, dim)
    for start in range(0, n_vis, max(1, int(block_rows))):
        rows = slice(start, start + block_rows)
        vb = v[rows]
        for index, (part, (col_max, col_sum, acc_t)) in enumerate(zip(parts, stats)):
            attn = linear(vb, q_w[part], q_b[part])                                  # (rows, part width)
            if clamping:
                attn.clamp_(min=-CLAMP_LIMIT if clamp_min else None, max=CLAMP_LIMIT if clamp_max else None)
            if index == 0:
                delta_v[rows] = linear(_image_probs(attn, bias_v, heads, valid_width), u_t, out_bias)
            rescale = column_softmax_step(attn, col_max, col_sum)                    # attn is now exp(attn - max)
            acc_t.mul_(rescale).add_(t_matmul(vb, attn))
    return delta_v, torch.cat([acc_t / col_sum for _, col_sum, acc_t in stats], dim=1).t()


def column_softmax_step(block: torch.Tensor, col_max: torch.Tensor, col_sum: torch.Tensor) -> torch.Tensor:
    """One block of an online softmax over the rows, per column, in place: block (rows, W) becomes exp(block - m')
    with m' = max(col_max, its column max), col_sum becomes col_sum * exp(col_max - m') + its column sums, col_max
    becomes m'; returns exp(old col_max - m') (W,). The compiled kernel (two passes, its own exp to ~1 ulp) runs on
    contiguous float32 CPU blocks when built; PyTorch otherwise."""
    if (block.dtype == torch.float32 and block.is_contiguous() and col_max.is_contiguous() and col_sum.is_contiguous()
            and block.device.type == "cpu" and extension.supports(block.device)):
        return extension.column_softmax_step(block, col_max, col_sum)
    return column_softmax_step_torch(block, col_max, col_sum)


def column_softmax_step_torch(block: torch.Tensor, col_max: torch.Tensor, col_sum: torch.Tensor) -> torch.Tensor:
    """`column_softmax_step` in PyTorch operations (any device and dtype)."""
    new_max = torch.maximum(col_max, block.amax(dim=0))
    rescale = torch.exp(col_max - new_max)
    col_max.copy_(new_max)
    col_sum.mul_(rescale).add_(block.sub_(new_max).exp_().sum(dim=0))
    return rescale


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


__all__ = ["CLAMP_LIMIT", "bi_attention_inference", "blocked_bi_attention", "clamp_may_bite", "column_softmax_step"]
