"""flatten_level / flatten_levels: per-level (N, A*C, H, W) maps -> per-anchor rows in the anchors' order."""
import torch

from glip.modeling.head.levels import flatten_level, flatten_levels


def test_rows_follow_location_then_anchor_order():
    n, a, c, h, w = 2, 3, 4, 2, 5
    x = torch.randn(n, a * c, h, w)
    out = flatten_level(x, c)
    assert out.shape == (n, h * w * a, c)
    for b in range(n):
        for y in range(h):
            for xx in range(w):
                for k in range(a):
                    row = (y * w + xx) * a + k
                    assert torch.equal(out[b, row], x[b, k * c:(k + 1) * c, y, xx])


def test_single_anchor_is_a_view_like_the_plain_permute():
    x = torch.randn(2, 8, 3, 5)
    out = flatten_level(x, 8)
    plain = x.permute(0, 2, 3, 1).reshape(2, -1, 8)
    assert torch.equal(out, plain) and out.stride() == plain.stride() and out.data_ptr() == x.data_ptr()


def test_levels_are_concatenated_in_order():
    levels = [torch.randn(1, 6, 4, 4), torch.randn(1, 6, 2, 2)]
    out = flatten_levels(levels, 3)
    assert out.shape == (1, (16 + 4) * 2, 3)
    assert torch.equal(out[:, :32], flatten_level(levels[0], 3))
    assert torch.equal(out[:, 32:], flatten_level(levels[1], 3))
