"""Blocked fusion attention (`glip.layers.blocked_attention`) against the unblocked formulation (full softmax over
each axis): values and gradients (gradcheck, with and without dropout and clamps) of the training function, values
of the inference function."""
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


@pytest.mark.parametrize("scale,with_bias,block_rows", [(1.0, True, 8), (1.0, False, 31), (300.0, True, 5),
                                                        (300.0, False, 1024)])
def test_inference_function_matches_unblocked(scale, with_bias, block_rows):
    operands = _operands(n=31, dim=70, scale=scale, with_bias=with_bias)  # dim 70 >= 64: oneDNN products too
    delta_v, pooled = ba.bi_attention_inference(*operands, HEADS, True, True, block_rows=block_rows)
    exp_v, exp_l = _unblocked(*operands, True)
    if scale > 1:
        v, q_t, q_b = operands[:3]
        assert (v @ q_t + q_b).abs().max() > ba.CLAMP_LIMIT  # the clamps bite
    torch.testing.assert_close(delta_v, exp_v, rtol=1e-5, atol=1e-5 * exp_v.abs().max().item())
    torch.testing.assert_close(pooled, exp_l, rtol=1e-5, atol=1e-5 * exp_l.abs().max().item())


def test_inference_function_skips_the_valid_tokens_bias_of_ones_and_keeps_others():
    v, q_t, q_b, u, _, out_bias = _operands(n=17, scale=1.0)
    ones = torch.ones(u.shape[0])
    with_ones, _ = ba.bi_attention_inference(v, q_t, q_b, u, ones, out_bias, HEADS, False, False)
    without, _ = ba.bi_attention_inference(v, q_t, q_b, u, None, out_bias, HEADS, False, False)
    assert torch.equal(with_ones, without)
    for other in (torch.arange(u.shape[0], dtype=torch.float32), torch.full((u.shape[0],), -9e15)):
        got, _ = ba.bi_attention_inference(v, q_t, q_b, u, other, out_bias, HEADS, False, False)
        torch.testing.assert_close(got, _unblocked(v, q_t, q_b, u, other, out_bias, False)[0], rtol=1e-5, atol=1e-6)


def test_clamp_bound_says_when_no_logit_can_reach_the_limit():
    v = torch.zeros(2, 4)
    v[0, 0] = 100.0
    q_t = torch.zeros(4, 3)
    q_t[0, 1] = 400.0                                        # |v . q| <= 100 * 400 = 40000
    assert not ba.clamp_may_bite(v, q_t, torch.tensor([0.0, 9000.0, 0.0]))
    assert ba.clamp_may_bite(v, q_t, torch.tensor([0.0, 10000.0, 0.0]))
    assert ba.clamp_may_bite(torch.full((2, 4), float("inf")), q_t, torch.zeros(3))
    assert ba.clamp_may_bite(torch.full((2, 4), float("nan")), q_t, torch.zeros(3))


@pytest.mark.skipif(not extension.supports(torch.device("cpu")), reason="glip._C not built")
def test_compiled_column_softmax_step_matches_pytorch():
    """Two blocks of an online column softmax (the first from -inf maxima, the second raising some of them), with
    logits far below the maxima (exp underflows): the compiled kernel against the PyTorch operations."""
    gen = torch.Generator().manual_seed(4)
    blocks = [10 * torch.randn(37, 70, generator=gen), 10 * torch.randn(29, 70, generator=gen) + 3]
    blocks[0][0, :5] = -500.0
    state = {name: (torch.full((70,), float("-inf")), torch.zeros(70)) for name in ("ext", "torch")}
    for block in blocks:
        got_block, ref_block = block.clone(), block.clone()
        got_rescale = extension.column_softmax_step(got_block, *state["ext"])
        ref_rescale = ba.column_softmax_step_torch(ref_block, *state["torch"])
        torch.testing.assert_close(got_block, ref_block, rtol=2e-7, atol=2e-38)
        torch.testing.assert_close(got_rescale, ref_rescale, rtol=2e-7, atol=0.0)
        assert torch.equal(state["ext"][0], state["torch"][0])                  # the maxima: exactly
        torch.testing.assert_close(state["ext"][1], state["torch"][1], rtol=1e-6, atol=0.0)
    assert (blocks[1].amax(0) > blocks[0].amax(0)).any()                          # some maxima did change

