"""Blocked fusion attention (`glip.layers.blocked_attention`): the PyTorch fallback and the compiled kernel against
the unblocked formulation (full softmax over each axis), for several block sizes, masks and clamps."""
import pytest
import torch

from glip.layers import blocked_attention as ba
from glip.layers import extension

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


def _check(fn, block_rows, clamp, scale, with_bias):
    operands = _operands(scale=scale, with_bias=with_bias)
    delta_v, pooled = fn(*operands, HEADS, clamp, clamp, block_rows)
    exp_v, exp_l = _unblocked(*operands, clamp)
    torch.testing.assert_close(delta_v, exp_v, rtol=1e-5, atol=1e-5 * exp_v.abs().max().item())
    torch.testing.assert_close(pooled, exp_l, rtol=1e-5, atol=1e-5 * exp_l.abs().max().item())


CASES = [(1, False, 1.0, True), (5, False, 1.0, False), (7, True, 1.0, True), (64, True, 1.0, True),
         (4, True, 3000.0, True)]  # 3000: logits far beyond +-50000, the clamps and the rescaling bite


@pytest.mark.parametrize("block_rows,clamp,scale,with_bias", CASES)
def test_fallback_matches_unblocked(block_rows, clamp, scale, with_bias):
    _check(ba._bi_attention_blocks_torch, block_rows, clamp, scale, with_bias)


@pytest.mark.ext
@pytest.mark.skipif(extension.load() is None, reason="glip._C is not built (or GLIP_DISABLE_EXT=1)")
@pytest.mark.parametrize("block_rows,clamp,scale,with_bias", CASES)
def test_extension_matches_unblocked(block_rows, clamp, scale, with_bias):
    _check(_ext, block_rows, clamp, scale, with_bias)


def _ext(v, q_t, q_b, u, bias_v, out_bias, heads, clamp_min, clamp_max, block_rows):
    empty = v.new_empty(0)
    return extension.load().bi_attention_forward(v, q_t, q_b, u, empty if bias_v is None else bias_v, out_bias,
                                                 heads, clamp_min, clamp_max, ba.CLAMP_LIMIT, block_rows)


@pytest.mark.ext
@pytest.mark.skipif(extension.load() is None, reason="glip._C is not built (or GLIP_DISABLE_EXT=1)")
def test_extension_result_does_not_depend_on_threads():
    operands = _operands(n=301, dim=8, n_txt=6, n_valid=4)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(_ext(*operands, HEADS, True, True, 16))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_double_precision_and_dispatch():
    operands = _operands(dtype=torch.float64)
    delta_v, pooled = ba.bi_attention_blocks(*operands, HEADS, False, False, block_rows=6)
    exp_v, exp_l = _unblocked(*operands, False)
    torch.testing.assert_close(delta_v, exp_v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pooled, exp_l, rtol=1e-12, atol=1e-12)


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
