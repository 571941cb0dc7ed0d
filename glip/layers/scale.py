"""A learned scalar multiplier (the per-level box-regression scale of FCOS/ATSS heads)."""
import torch
from torch import nn


class Scale(nn.Module):
    """`x * scale` with one learned scalar; state-dict key `scale` of shape (1,)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
