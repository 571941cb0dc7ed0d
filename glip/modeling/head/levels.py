"""From per-level head maps to per-anchor rows: the one layout rule shared by the head, the loss and the
post-processor.

A head predictor outputs, per pyramid level, a map `(N, A*C, H, W)`: for each location `A` anchors with `C`
values each, the anchor index outer (channels `a*C .. a*C + C - 1` belong to anchor `a`). The anchor generator
lists a level's anchors location-major, row-major over `(y, x)`, then anchor; the rows of `flatten_level` follow
the same order, so row `i` of a level is the prediction for anchor `i` of that level.
"""
from typing import Sequence

import torch


def flatten_level(x: torch.Tensor, channels: int) -> torch.Tensor:
    """`(N, A*C, H, W)` -> `(N, H*W*A, C)`, rows ordered (y, x, anchor); `C = channels`.

    The result is a view where the memory allows it (a permuted view of `x` for `A == 1`), as the reference's
    `permute_and_flatten` gives it, so later matmuls see the same strides.
    """
    n, _, h, w = x.shape
    return x.view(n, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, channels)


def flatten_levels(per_level: Sequence[torch.Tensor], channels: int) -> torch.Tensor:
    """Per-level maps `(N, A*C, H_l, W_l)` -> `(N, sum_l H_l*W_l*A, C)`, ordered (level, y, x, anchor)."""
    return torch.cat([flatten_level(x, channels) for x in per_level], dim=1)
