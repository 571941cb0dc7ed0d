"""Blocked fusion attention for training (`glip.layers.blocked_attention`) against the unblocked formulation (full
softmax over each axis): values, gradients (gradcheck, with and without dropout and clamps)."""
import pytest
import torch

from glip.layers import blocked_attention as ba

HEADS = 3


def _operands(n=23, dim=5, n_txt=4, n_valid=3, scale=1.0, with_bias=True, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    width, valid_width = HEADS * n_txt, HEADS * n_valid
    v = scale * torch.randn(n, dim, generator=gen, dtype=dtype)
    q_t = scale * torch.randn(dim, width, generator=gen, dtype=dtype)
    q_b = torch.randn(width, generator=gen, dtype=dtype)
    u = torch.randn(valid_width, dim, generator=gen, dtype=dtype)
    bias_v = torch.randn(valid_width, generator=gen, dtype=dtype) if with_bias else None
    out_bias = torch.randn(dim, generator=gen, dtype=dtype)
    return v, q_t, q_b, u, bias_v, out_bias


def _unblocked(v, q_t, q_b, u, bias_v, out_bias, clamp):
    """The formulation without blocks: logits (N, W), softmax over the rows per column and over each head's valid
    tokens per row."""
    attn = v @ q_t + q_b
    if clamp:
        attn = attn.clamp(-ba.CLAMP_LIMIT, ba.CLAMP_LIMIT)
    valid_width = u.shape[0]
    logits = attn[:, :valid_width] + (0 if bias_v is None else bias_v)
    p_v = logits.view(v.shape[0], HEADS, -1).softmax(-1).view(v.shape[0], valid_width)
    return out_bias + p_v @ u, attn.softmax(dim=0).t() @ v


@pytest.mark.parametrize("dropout,scale", [(0.0, 1.0), (0.0, 300.0), (0.4, 1.0), (0.4, 300.0)])
def test_training_function_gradcheck(dropout, scale):
    v, q_t, q_b, u, bias_v, out_bias = _operands(n=13, dim=4, n_txt=3, n_valid=2, scale=scale, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (v, q_t, q_b, u, out_bias)]

    def fn(v, q_t, q_b, u, out_bias):  # the same dropout masks on every call: a fresh seeded generator
        return ba.blocked_bi_attention(v, q_t, q_b, u, bias_v, out_bias, HEADS, True, True, dropout, 4,
                                       generator=torch.Generator().manual_seed(3))

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_training_function_forward_matches_unblocked_without_dropout():
    operands = _operands(n=31, scale=1.0)
    delta_v, pooled, mass = ba.blocked_bi_attention(*operands, HEADS, True, True, 0.0, block_rows=8)
    exp_v, exp_l = _unblocked(*operands, True)
    torch.testing.assert_close(delta_v, exp_v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled, exp_l, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mass, torch.ones_like(mass))
