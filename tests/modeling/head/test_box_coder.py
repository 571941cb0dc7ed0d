"""BoxCoder (ATSS, +1 widths, (x1+x2)/2 centres) against the reference golden and hand values."""
import math

import torch

from glip.modeling.head.box_coder import BoxCoder
from helpers import load_golden


def test_golden_encode_decode():
    g = load_golden("modules/box_coder.pt")
    coder = BoxCoder(g["weights"], g["bbox_xform_clip"])
    assert torch.allclose(coder.encode(g["gt_boxes"], g["anchors"]), g["encoded"], atol=1e-6, rtol=0)
    decoded = coder.decode(g["deltas"], g["anchors"])
    assert torch.allclose(decoded, g["decoded"], atol=1e-5, rtol=0)


def test_defaults_and_hand_values():
    coder = BoxCoder()
    assert coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert math.isclose(coder.bbox_xform_clip, math.log(1000.0 / 16))
    anchor = torch.tensor([[-28.0, -28.0, 35.0, 35.0]])  # width 64, centre 3.5
    # zero deltas give back the anchor
    assert torch.equal(coder.decode(torch.zeros(1, 4), anchor), anchor)
    # dx = 1 (x10) shifts by one width, dw = log 2 (x5) doubles the width: w' = 128 -> ctr +- 63.5
    deltas = torch.tensor([[10.0, 0.0, 5 * math.log(2.0), 0.0]])
    out = coder.decode(deltas, anchor)
    assert torch.allclose(out, torch.tensor([[3.5 + 64 - 63.5, -28.0, 3.5 + 64 + 63.5, 35.0]]), atol=1e-4)
    assert torch.allclose(coder.encode(out, anchor), deltas, atol=1e-5)
    # dw clamped at log(1000/16)
    huge = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), anchor)
    assert torch.allclose(huge[0, 2] - huge[0, 0] + 1, torch.tensor(64 * 1000 / 16.0), rtol=1e-5)


def test_decode_multiple_boxes_per_row():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0, 10.0, 0.0, 0.0]])
    out = coder.decode(deltas, anchors)
    assert torch.allclose(out, torch.tensor([[0.0, 0, 9, 9, 10, 10, 19, 19]]))
