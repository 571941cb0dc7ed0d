"""The text tokenizer of GLIP (HF AutoTokenizer, bert-base-uncased WordPiece for GLIP-T/L)."""
from transformers import AutoTokenizer

from glip.text.pretrained import TOKENIZER_FILES, resolve_pretrained


def build_tokenizer(name_or_path: str = "bert-base-uncased"):
    """Tokenizer for a hub id or local folder; works offline for bert-base-uncased (shipped vocab).

    The detector tokenizes with `tokenizer(captions, max_length=256, padding="max_length", truncation=True,
    return_tensors="pt")`, giving `input_ids` / `attention_mask` of shape (B, 256).
    """
    source = resolve_pretrained(name_or_path, TOKENIZER_FILES, what="tokenizer")
    return AutoTokenizer.from_pretrained(source)
