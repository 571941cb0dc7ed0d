"""glip.layers.cpu_gemm: products through oneDNN 1x1 convolutions against float64 references."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glip.layers import cpu_gemm


def _reference(x, w, b):
    return F.linear(x.double(), w.double(), None if b is None else b.double())


@pytest.mark.parametrize("shape,k,n,with_bias", [((300, 96), 96, 384, True), ((2, 70, 768), 768, 40, False),
                                                 ((5, 13, 17), 17, 9, True)])
def test_linear_matches_float64_reference(shape, k, n, with_bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    w = torch.randn(n, k, generator=gen)
    b = torch.randn(n, generator=gen) if with_bias else None
    got = cpu_gemm.linear(x, w, b)
    ref = _reference(x, w, b)
    assert got.shape == ref.shape and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("k,m,n", [(1000, 24, 300), (70, 5, 64), (3, 4, 2)])
def test_t_matmul_matches_float64_reference(k, m, n):
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(k, m, generator=gen), torch.randn(k, n, generator=gen)
    got = cpu_gemm.t_matmul(a, b)
    ref = a.double().t() @ b.double()
    assert got.shape == (m, n) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("batch", [1, 3])
def test_batched_linear_matches_float64_reference(batch):
    gen = torch.Generator().manual_seed(6)
    x, w = torch.randn(batch, 150, 32, generator=gen), torch.randn(batch, 20, 32, generator=gen)
    got = cpu_gemm.batched_linear(x, w)
    ref = x.double() @ w.double().transpose(-1, -2)
    assert got.shape == (batch, 150, 20)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_linear_gelu_matches_float64_reference():
    gen = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(2, 300, 96, generator=gen), torch.randn(384, 96, generator=gen) / 10, torch.randn(384)
    got = cpu_gemm.linear_gelu(x, w, b)
    ref = F.gelu(_reference(x, w, b))
    assert got.shape == ref.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    small = torch.randn(5, 96, generator=gen)                                    # too few rows: PyTorch's route
    torch.testing.assert_close(cpu_gemm.linear_gelu(small, w, b), F.gelu(F.linear(small, w, b)))


def test_linear_takes_the_onednn_route_only_where_it_applies():
    w = torch.randn(8, 16)
    assert cpu_gemm._use_onednn(torch.randn(cpu_gemm.MIN_ROWS, 16), w) == cpu_gemm.ONEDNN
    assert not cpu_gemm._use_onednn(torch.randn(cpu_gemm.MIN_ROWS - 1, 16), w)       # too few rows
    assert not cpu_gemm._use_onednn(torch.randn(100, 16, dtype=torch.float64), w)    # not float32
    assert not cpu_gemm._use_onednn(torch.randn(16), w)                              # a vector
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_gemm._use_onednn(torch.randn(100, 16), w)                     # autocast decides the dtype


def test_products_that_need_gradients_keep_pytorchs_route():
    w = torch.randn(8, 16)
    assert not cpu_gemm._use_onednn(torch.randn(100, 16, requires_grad=True), w)
    assert not cpu_gemm._use_onednn(torch.randn(100, 16), w.requires_grad_())
    with torch.no_grad():
        assert cpu_gemm._use_onednn(torch.randn(100, 16, requires_grad=True), w) == cpu_gemm.ONEDNN


def test_linear_on_non_contiguous_input_and_gradients_match_f_linear():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(40, 200, generator=gen)
    x1 = base.t()[:, :33].clone().requires_grad_()     # (200, 33) built from a transposed view
    x2 = x1.detach().clone().requires_grad_()
    layer = nn.Linear(33, 12)
    routed = nn.Linear(33, 12)
    routed.load_state_dict(layer.state_dict())
    assert cpu_gemm.route_linear_layers(nn.Sequential(routed)) == 1 and isinstance(routed, cpu_gemm.OneDNNLinear)
    weight = torch.randn(200, 12, generator=gen)
    (routed(x1.t().contiguous().t()) * weight).sum().backward()
    (layer(x2) * weight).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(routed.weight.grad, layer.weight.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(routed.bias.grad, layer.bias.grad, rtol=1e-5, atol=1e-4)


def test_routing_keeps_parameters_and_state_dict_keys():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 3)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert cpu_gemm.route_linear_layers(model) == 2
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert cpu_gemm.route_linear_layers(model) == 0  # already routed


def test_environment_variable_keeps_pytorch_products():
    code = "from glip.layers import cpu_gemm; import torch; print(cpu_gemm.ONEDNN, " \
           "cpu_gemm._use_onednn(torch.randn(100, 8), torch.randn(4, 8)))"
    env = dict(os.environ, GLIP_CPU_GEMM="mkl")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.split() == ["False", "False"]
