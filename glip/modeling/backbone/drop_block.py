"""DropBlock regularisation (Ghiasi et al. 2018) as GLIP applies it inside the FPN during training."""
import torch
import torch.nn.functional as F
from torch import nn


class DropBlock2D(nn.Module):
    """Zero random block_size x block_size spatial blocks of (B, C, H, W), shared over channels, then rescale.

    Block seeds are Bernoulli(drop_prob / block_size^2) per (image, y, x), drawn on the CPU generator as the
    reference does; the kept mask is 1 - maxpool(seeds) and the output is scaled by numel(mask) / sum(mask).
    Identity in eval mode or when `drop_prob == 0`.
    """

    def __init__(self, drop_prob: float, block_size: int):
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"DropBlock2D expects (B, C, H, W), got shape {tuple(x.shape)}")
        if not self.training or self.drop_prob == 0.0:
            return x
        gamma = self.drop_prob / (self.block_size ** 2)
        seeds = (torch.rand(x.shape[0], *x.shape[2:]) < gamma).float().to(x.device)
        keep = self._block_mask(seeds)
        out = x * keep[:, None, :, :]
        return out * keep.numel() / keep.sum()

    def _block_mask(self, seeds: torch.Tensor) -> torch.Tensor:
        """(B, H, W) seeds -> (B, H, W) keep mask (0 inside dropped blocks)."""
        size = self.block_size
        dropped = F.max_pool2d(seeds[:, None], kernel_size=(size, size), stride=(1, 1), padding=size // 2)
        if size % 2 == 0:
            dropped = dropped[:, :, :-1, :-1]
        return 1 - dropped.squeeze(1)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"
