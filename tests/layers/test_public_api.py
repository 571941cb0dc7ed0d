"""`glip.layers` exposes the reference's functional entry points with their argument order."""
import torch

import glip.layers as L


def test_ml_nms_suppresses_same_label_overlaps_only_and_strictly():
    # [0,0,9,9] and [1,1,10,10]: areas 10*10 = 100 each with +1 widths, intersection 9*9 = 81, IoU 81/119 = 0.681
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [1.0, 1.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([1, 1, 2])
    assert L.ml_nms(boxes, scores, labels, 0.6).tolist() == [0, 2]
    assert L.ml_nms(boxes, scores, labels, 81 / 119 + 1e-6).tolist() == [0, 1, 2]


def test_modulated_deform_conv_with_zero_offsets_and_unit_mask_is_a_convolution():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 7, generator=gen)
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    bias = torch.randn(5, generator=gen)
    offset = torch.zeros(1, 18, 6, 7)
    mask = torch.ones(1, 9, 6, 7)
    out = L.modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, bias, padding=1), atol=1e-5, rtol=1e-5)
