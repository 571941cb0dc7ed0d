"""CUDA kernels of glip._C against the C++ CPU kernels: DCNv2 forward/backward and multi-label NMS.

Marked `cuda`: skipped without a GPU, or when glip._C was built without its CUDA kernels (tools/gpu_check.sh
builds them with FORCE_CUDA=1 and refuses to go on when they are missing).
"""
import pytest
import torch

from glip.layers import extension

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not extension.supports(torch.device("cuda")) if torch.cuda.is_available() else True,
                       reason="glip._C built without CUDA kernels (build with FORCE_CUDA=1)"),
]

CASES = [  # (batch, channels, H, W, out channels, stride, padding, dilation, groups, deformable groups)
    (1, 16, 9, 11, 8, 1, 1, 1, 1, 1),
    (2, 8, 7, 6, 8, 2, 1, 1, 2, 2),
    (1, 12, 10, 8, 6, 1, 2, 2, 1, 3),
]


def _dcn_inputs(case, dtype, offset_scale=3.0, seed=0):
    b, c, h, w, out_c, stride, pad, dil, groups, dg = case
    out_h = (h + 2 * pad - (dil * 2 + 1)) // stride + 1
    out_w = (w + 2 * pad - (dil * 2 + 1)) // stride + 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    offset = offset_scale * torch.randn(b, 2 * dg * 9, out_h, out_w, generator=gen, dtype=dtype)  # some outside
    mask = torch.rand(b, dg * 9, out_h, out_w, generator=gen, dtype=dtype)
    weight = torch.randn(out_c, c // groups, 3, 3, generator=gen, dtype=dtype)
    bias = torch.randn(out_c, generator=gen, dtype=dtype)
    return [x, offset, mask, weight, bias], (stride, pad, dil, groups, dg)


def _run(inputs, conf, device):
    leaves = [t.detach().to(device).requires_grad_() for t in inputs]
    stride, pad, dil, groups, dg = conf
    out = extension.modulated_deform_conv(*leaves, stride, pad, dil, groups, dg)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out).to(device)
    out.backward(grad_out)
    return [out.detach().cpu()] + [t.grad.cpu() for t in leaves]


@pytest.mark.parametrize("case", CASES)
def test_dcn_cuda_forward_and_backward_match_the_cpu_kernel_in_double(case):
    inputs, conf = _dcn_inputs(case, torch.float64)
    for got, ref, name in zip(_run(inputs, conf, "cuda"), _run(inputs, conf, "cpu"),
                              ("output", "input", "offset", "mask", "weight", "bias")):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9, msg=name)


def test_dcn_cuda_matches_the_cpu_kernel_on_a_dyhead_level_in_float32():
    inputs, conf = _dcn_inputs((1, 256, 50, 76, 256, 1, 1, 1, 1, 1), torch.float32, offset_scale=2.0)
    inputs[3] = inputs[3] / (256 * 9) ** 0.5
    for got, ref, name in zip(_run(inputs, conf, "cuda"), _run(inputs, conf, "cpu"),
                              ("output", "input", "offset", "mask", "weight", "bias")):
        scale = ref.abs().max().item()
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_dcn_layer_dispatches_to_the_cuda_kernel_and_casts_to_float32_under_autocast():
    from glip.layers.deform_conv import modulated_deform_conv

    inputs, conf = _dcn_inputs(CASES[0], torch.float32)
    cuda = [t.cuda() for t in inputs]
    stride, pad, dil, groups, dg = conf
    expected = extension.modulated_deform_conv(*cuda, stride, pad, dil, groups, dg)
    with torch.autocast("cuda", dtype=torch.float16):
        out = modulated_deform_conv(cuda[0].half(), cuda[1].half(), cuda[2].half(), *cuda[3:], stride, pad, dil,
                                    groups, dg)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("n,labels,threshold", [(500, 1, 0.5), (3000, 80, 0.6), (2000, 5, 0.3)])
def test_ml_nms_cuda_keeps_the_same_boxes_as_the_cpu_kernel(n, labels, threshold):
    gen = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=gen) * 400
    wh = torch.rand(n, 2, generator=gen) * 80 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(n, generator=gen)
    cls = torch.randint(1, labels + 1, (n,), generator=gen)
    ref = extension.ml_nms(boxes, scores, cls, threshold)
    got = extension.ml_nms(boxes.cuda(), scores.cuda(), cls.cuda(), threshold)
    assert got.device.type == "cuda"
    assert torch.equal(got.cpu(), ref)
