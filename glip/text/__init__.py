"""Text resources shared by the data pipeline and the model: where HuggingFace files come from
(:func:`resolve_pretrained`) and the tokenizer (:func:`build_tokenizer`).

A leaf package (it imports no other ``glip`` package), so that ``glip.data`` and ``glip.modeling`` both use the
same tokenizer without ``data`` importing ``modeling``. ``glip.modeling.language`` re-exports both names.
"""
from glip.text.pretrained import CONFIG_FILES, TOKENIZER_FILES, WEIGHT_FILES, resolve_pretrained
from glip.text.tokenizer import build_tokenizer

__all__ = ["build_tokenizer", "resolve_pretrained", "CONFIG_FILES", "TOKENIZER_FILES", "WEIGHT_FILES"]
