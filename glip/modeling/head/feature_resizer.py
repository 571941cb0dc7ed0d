"""`FeatureResizer`: the text projection in front of the contrastive-align head (the reference's, from MDETR)."""
import torch
from torch import nn


class FeatureResizer(nn.Module):
    """`(..., in_dim)` -> `(..., out_dim)`: Linear, then LayerNorm (eps 1e-12) when `do_ln`, then dropout.

    Keys: `fc.weight`, `fc.bias`, `layer_norm.weight`, `layer_norm.bias` (default PyTorch initialisation).
    In GLIP: `rpn.resizer`, LANG_DIM -> FUSE_CONFIG.JOINT_EMB_SIZE with dropout JOINT_EMB_DROPOUT, applied to the
    language backbone's `embedded` text when USE_CONTRASTIVE_ALIGN_LOSS.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float, do_ln: bool = True):
        super().__init__()
        self.do_ln = do_ln
        self.fc = nn.Linear(in_dim, out_dim, bias=True)
        self.layer_norm = nn.LayerNorm(out_dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc(features)
        if self.do_ln:
            x = self.layer_norm(x)
        return self.dropout(x)
