"""GLIP: Grounded Language-Image Pre-training, a faithful re-implementation on current PyTorch."""

__version__ = "0.1.0"
