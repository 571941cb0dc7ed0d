"""The compiled ops of `glip._C` (glip/layers/extension.py) against torchvision, gradcheck, goldens and a slow NMS loop."""
import numpy as np
import pytest
import torch
import torchvision
from helpers import load_golden
from helpers.weights import fill_value

from glip.layers import extension

pytestmark = [
    pytest.mark.ext,
    pytest.mark.skipif(extension.load() is None,
                       reason="glip._C is not built (or GLIP_DISABLE_EXT=1); build it with "
                              "`python setup.py build_ext --inplace`"),
]


def _inputs(batch, channels, height, width, out_channels, groups, dg, k, stride, pad, dil, dtype, offset_scale,
            seed=0):
    gen = torch.Generator().manual_seed(seed)
    out_h = (height + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    out_w = (width + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    x = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
    offset = offset_scale * torch.randn(batch, 2 * dg * k * k, out_h, out_w, generator=gen, dtype=dtype)
    mask = torch.rand(batch, dg * k * k, out_h, out_w, generator=gen, dtype=dtype)
    weight = torch.randn(out_channels, channels // groups, k, k, generator=gen, dtype=dtype) * 0.3
    bias = torch.randn(out_channels, generator=gen, dtype=dtype)
    return x, offset, mask, weight, bias


CASES = {
    # name: (batch, C, H, W, Cout, groups, dg, k, stride, pad, dilation, offset_scale)
    "same_size": (2, 4, 5, 6, 3, 1, 1, 3, 1, 1, 1, 1.5),
    "stride2_pad": (1, 4, 7, 8, 2, 1, 1, 3, 2, 1, 1, 1.5),
    "groups": (1, 4, 5, 5, 4, 2, 1, 3, 1, 1, 1, 1.5),
    "deformable_groups": (2, 4, 4, 5, 2, 1, 2, 3, 1, 1, 1, 1.5),
    "dilation_no_pad": (1, 2, 7, 6, 2, 1, 1, 3, 1, 0, 2, 1.5),
    "far_outside": (1, 2, 4, 4, 2, 1, 1, 3, 1, 2, 1, 4.0),
    "kernel1": (1, 3, 4, 4, 2, 1, 1, 1, 1, 0, 1, 1.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_torchvision(name):
    batch, c, h, w, cout, groups, dg, k, stride, pad, dil, scale = CASES[name]
    x, offset, mask, weight, bias = _inputs(batch, c, h, w, cout, groups, dg, k, stride, pad, dil, torch.float32,
                                            scale)
    ours = extension.modulated_deform_conv(x, offset, mask, weight, bias, stride, pad, dil, groups, dg)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=stride, padding=pad, dilation=dil,
                                        mask=mask)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_forward_without_bias_matches_torchvision():
    x, offset, mask, weight, _ = _inputs(2, 4, 6, 5, 3, 1, 1, 3, 1, 1, 1, torch.float32, 1.0)
    ours = extension.modulated_deform_conv(x, offset, mask, weight, None, 1, 1, 1, 1, 1)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck_float64(name):
    batch, c, h, w, cout, groups, dg, k, stride, pad, dil, scale = CASES[name]
    tensors = _inputs(batch, c, h, w, cout, groups, dg, k, stride, pad, dil, torch.float64, scale, seed=1)
    tensors = [t.requires_grad_() for t in tensors]

    def fn(x, offset, mask, weight, bias):
        return extension.modulated_deform_conv(x, offset, mask, weight, bias, stride, pad, dil, groups, dg)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_larger_offset_map_is_reinterpreted():
    """Offsets/masks of a finer level (5x7) used for a 3x4 output are read as raw memory per image."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = (1.3 * torch.randn(2, 18, 5, 7, generator=gen, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(2, 9, 5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(x, offset, mask, weight):
        return extension.modulated_deform_conv(x, offset, mask, weight, None, 1, 1, 1, 1, 1)

    assert torch.autograd.gradcheck(fn, (x, offset, mask, weight), eps=1e-6, atol=1e-5, rtol=1e-4)
    out = fn(x, offset, mask, weight)
    flat_off = offset.reshape(2, -1)[:, :18 * 12].reshape(2, 18, 3, 4)
    flat_mask = mask.reshape(2, -1)[:, :9 * 12].reshape(2, 9, 3, 4)
    ref = torchvision.ops.deform_conv2d(x, flat_off, weight, padding=1, mask=flat_mask)
    torch.testing.assert_close(out, ref)


def test_gradients_match_torchvision_float32():
    x, offset, mask, weight, bias = _inputs(2, 8, 9, 11, 6, 2, 2, 3, 2, 1, 1, torch.float32, 2.0, seed=5)
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    ref_leaves = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    grad_out = torch.randn(2, 6, 5, 6, generator=torch.Generator().manual_seed(6))
    extension.modulated_deform_conv(*leaves, 2, 1, 1, 2, 2).backward(grad_out)
    xr, offr, maskr, wr, br = ref_leaves
    torchvision.ops.deform_conv2d(xr, offr, wr, br, stride=2, padding=1, mask=maskr).backward(grad_out)
    for ours, ref in zip(leaves, ref_leaves):
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case,prefix_key,stride", [
    ("stride1_same_size", "stride1", 1),
    ("stride2_from_finer_level", "stride2", 2),
    ("stride1_from_coarser_level_reinterpreted", "stride1", 1),
])
def test_golden_modulated_deform_conv(case, prefix_key, stride):
    golden = load_golden("modules/modulated_deform_conv.pt")
    prefix = golden["weight_prefixes"][prefix_key]
    weight = fill_value(prefix + ".weight", (256, 256, 3, 3), torch.float32)
    bias = fill_value(prefix + ".bias", (256,), torch.float32)
    data = golden["cases"][case]
    out = extension.modulated_deform_conv(data["input"], data["offset"], data["mask"], weight, bias, stride, 1, 1,
                                          1, 1)
    torch.testing.assert_close(out, data["output"], rtol=1e-5, atol=1e-5)


def _slow_ml_nms(boxes, scores, labels, threshold):
    """Greedy loop in float32 arithmetic like the reference kernel (IoU and threshold both float32)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # Python's sort is stable
    b = boxes.float().numpy()
    one, zero, thr = np.float32(1), np.float32(0), np.float32(threshold)
    area = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    suppressed, keep = set(), []
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if j in suppressed or int(labels[j]) != int(labels[i]):
                continue
            w = max(zero, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]) + one)
            h = max(zero, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]) + one)
            inter = w * h
            if inter / (area[i] + area[j] - inter) > thr:
                suppressed.add(j)
    return keep


def test_golden_ml_nms():
    golden = load_golden("modules/ml_nms.pt")
    keep = extension.ml_nms(golden["boxes"], golden["scores"], golden["labels"], golden["threshold"])
    assert keep.dtype == torch.int64
    assert torch.equal(keep.sort().values, golden["keep"])
    scores = golden["scores"][keep]
    assert torch.all(scores[:-1] >= scores[1:])


@pytest.mark.parametrize("seed", range(5))
def test_ml_nms_matches_slow_loop_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 200
    xy = torch.randint(0, 40, (n, 2), generator=gen).float()
    wh = torch.randint(0, 25, (n, 2), generator=gen).float()
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[n // 2:] = boxes[: n // 2]  # duplicated boxes: exact IoU ties
    scores = torch.randint(0, 6, (n,), generator=gen).float() / 5  # many equal scores
    labels = torch.randint(1, 4, (n,), generator=gen)
    for threshold in (0.0, 0.3, 0.5, 1.0):
        keep = extension.ml_nms(boxes, scores, labels, threshold)
        assert keep.tolist() == _slow_ml_nms(boxes, scores, labels, threshold)


def test_ml_nms_threshold_is_strict_and_labels_separate():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 4.0], [0.0, 0.0, 9.0, 4.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([1, 1, 2])
    # IoU of box 1 with box 0 = 50 / 100 = 0.5 exactly (with +1 widths)
    assert extension.ml_nms(boxes, scores, labels, 0.5).tolist() == [0, 1, 2]
    assert extension.ml_nms(boxes, scores, labels, 0.49).tolist() == [0, 2]
    assert extension.ml_nms(boxes[:0], scores[:0], labels[:0], 0.5).tolist() == []
