"""Matrix products on the CPU through oneDNN: `linear(x, weight, bias)` and the `OneDNNLinear` layer.

PyTorch runs fp32 `F.linear` / `torch.mm` on the CPU with MKL's sgemm, which on some machines (measured: AMD
EPYC with AVX-512, MKL 2024.2) takes a narrower code path and reaches ~200 GFLOP/s on two cores, while oneDNN's
convolution kernels reach ~450-500 GFLOP/s there. A product `x (M, K) @ W^T (K, N)` is a 1x1 convolution of the
channels-last image `x` viewed as (1, K, M, 1) with the kernel W viewed as (N, K, 1, 1); its channels-last output
is `(M, N)` row-major, so no data moves. Same values up to fp32 rounding (another summation order).

The oneDNN route is taken for float32 CPU tensors that need no gradient (inference; in training the summation order
of PyTorch's products keeps the updates within the tolerances of the reference's training goldens), outside
tracing/export, with at least `MIN_ROWS` rows; `GLIP_CPU_GEMM=mkl` (read when the process starts) keeps PyTorch's
own product everywhere (the compiled DCN kernel reads the same variable), for side-by-side measurements.
"""
import os

import torch
import torch.nn.functional as F
from torch import nn

MIN_ROWS = 64
ONEDNN = os.environ.get("GLIP_CPU_GEMM", "onednn").lower() != "mkl"


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # the tracing checks first: a shape test while exporting would become a guard on the traced sizes
    if torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False  # training keeps PyTorch's products: its updates match the reference's training goldens
    return (ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() >= 2 and x.numel() >= MIN_ROWS * x.shape[-1] and x.shape[-1] > 0
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu"))


def _conv_1x1(x: torch.Tensor, weight: torch.Tensor, product) -> torch.Tensor:
    """x (..., K) times weight (N, K)^T as `product(image, kernel)`, a 1x1 convolution of x's rows viewed as the
    channels-last image (1, K, M, 1) (no copy for contiguous rows) -> (..., N)."""
    lead, k = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, k)
    if rows.stride(1) != 1 or rows.stride(0) != k:
        rows = rows.contiguous()
    image = rows.view(1, rows.shape[0], 1, k).permute(0, 3, 1, 2)          # (1, K, M, 1) channels-last
    out = product(image, weight.contiguous().view(weight.shape[0], k, 1, 1))  # (1, N, M, 1) channels-last
    return out.permute(0, 2, 3, 1).reshape(*lead, weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for x (..., K), weight (N, K), bias (N,) -> (..., N), through oneDNN where
    it applies (see the module docstring)."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    return _conv_1x1(x, weight, lambda image, kernel: F.conv2d(image, kernel, bias))


def batched_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight.transpose(-1, -2)` for x (B, M, K) and weight (B, N, K) -> (B, M, N), each image's product
    through `linear` (oneDNN where it applies)."""
    if x.dim() != 3 or weight.dim() != 3 or x.shape[0] != weight.shape[0]:
        return torch.matmul(x, weight.transpose(-1, -2))
    if x.shape[0] == 1:
        return linear(x[0], weight[0]).unsqueeze(0)
    return torch.stack([linear(x[b], weight[b]) for b in range(x.shape[0])])


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor = None) -> torch.Tensor:
    """`F.gelu(F.linear(x, weight, bias))` (exact, erf GELU): through oneDNN where `linear` would be, with the GELU
    applied by the convolution as a post-op (one pass less over the output; oneDNN's erf differs from PyTorch's
    by ~1e-7 relative)."""
    if not _use_onednn(x, weight) or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        return F.gelu(linear(x, weight, bias))
    return _conv_1x1(x, weight, lambda image, kernel: torch.ops.mkldnn._convolution_pointwise(
        image, kernel, bias, [0, 0], [1, 1], [1, 1], 1, "gelu", [], "none"))


def t_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a.t() @ b` for a (K, M), b (K, N) -> (M, N), through oneDNN where it applies, without transposing either
    operand in memory: oneDNN's matmul reads both as strided views (torch.ops.mkldnn._linear_pointwise; measured for
    a text-side reduction over 1024 visual rows, (256, 1024) x (1024, 2048): 2.6 ms against 3.1 ms as an NCHW 1x1
    convolution, which this falls back to where that operator is missing)."""
    if a.dim() != 2 or b.dim() != 2 or not _use_onednn(b.t(), a.t()):
        return torch.mm(a.t(), b)
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return torch.ops.mkldnn._linear_pointwise(a.t(), b.t(), None, "none", [], "")
    k, m = a.shape
    image = b.contiguous().view(1, k, b.shape[1], 1)
    return F.conv2d(image, a.t().contiguous().view(m, k, 1, 1)).view(m, b.shape[1])


class OneDNNLinear(nn.Linear):
    """`nn.Linear` (same parameters and state-dict keys) whose product goes through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def route_linear_layers(model: nn.Module) -> int:
    """Make every plain `nn.Linear` of `model` a `OneDNNLinear` in place (parameters untouched); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDNNLinear
            count += 1
    return count


__all__ = ["MIN_ROWS", "OneDNNLinear", "batched_linear", "linear", "linear_gelu", "route_linear_layers",
           "t_matmul"]
