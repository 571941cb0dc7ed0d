"""Kept importable: the tokenizer moved to :mod:`glip.text.tokenizer` (shared with the data pipeline)."""
from glip.text.tokenizer import build_tokenizer

__all__ = ["build_tokenizer"]
