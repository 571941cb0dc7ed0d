"""A small GLIP for fast tests, selected through the config: no package function is patched.

`TINY_BERT` is a BERT folder (tests/fixtures/bert_1layer: bert-base-uncased's config with 1 layer and a 128-wide
feed-forward, hidden size 768 so the head keeps its language width). Local BERT folders are regular
MODEL.LANGUAGE_BACKBONE.MODEL_TYPE values, so the language backbone and the head's text layers (sized by the
backbone's config) both come out small; the tokenizer stays TOKENIZER_TYPE's (the bert-base-uncased vocabulary).
"""
from helpers import FIXTURES

TINY_BERT = FIXTURES / "bert_1layer"

# Command-line style options selecting the tiny BERT (append to a config's opts).
TINY_BERT_OPTS = ["MODEL.LANGUAGE_BACKBONE.MODEL_TYPE", str(TINY_BERT)]
