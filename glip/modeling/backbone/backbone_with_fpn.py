"""Visual backbone = body (multi-stage feature extractor) followed by an FPN."""
from typing import List

import torch
from torch import nn


class BackboneWithFPN(nn.Module):
    """`body` then `fpn`; keys `body.*` / `fpn.*` as in the reference's nn.Sequential(body, fpn).

    forward: images (B, 3, H, W) -> list of pyramid levels (B, out_channels, H_l, W_l), finest first
    (P3..P7 for the RetinaNet-style Swin backbone).
    """

    def __init__(self, body: nn.Module, fpn: nn.Module, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        return self.fpn(self.body(images))
