"""Shared test utilities: fixture paths, golden loading and the golden weight-fill rule."""
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REFERENCE = FIXTURES / "reference"


def load_golden(relpath: str):
    """torch.load a golden under tests/fixtures/reference (plain dicts, lists and tensors)."""
    return torch.load(REFERENCE / relpath, weights_only=False, map_location="cpu")
