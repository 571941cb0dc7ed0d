"""Visual backbones (Swin Transformer + FPN); `build_backbone(cfg)` is the entry point."""
from .build import build_backbone

__all__ = ["build_backbone"]
