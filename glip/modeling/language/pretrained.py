"""Kept importable: the file resolution moved to :mod:`glip.text.pretrained` (shared with the data pipeline)."""
from glip.text.pretrained import ASSETS_DIR, CONFIG_FILES, SHIPPED, TOKENIZER_FILES, WEIGHT_FILES, resolve_pretrained

__all__ = ["ASSETS_DIR", "CONFIG_FILES", "SHIPPED", "TOKENIZER_FILES", "WEIGHT_FILES", "resolve_pretrained"]
