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

# GLIP-T shrunk for training-step tests: a small Swin, one fusion block, small images, CPU.
TINY_GLIP_OPTS = ["MODEL.SWINT.EMBED_DIM", 32, "MODEL.SWINT.DEPTHS", (1, 1, 1, 1), "MODEL.SWINT.NUM_HEADS",
                  (1, 2, 4, 8), "MODEL.SWINT.OUT_CHANNELS", (32, 64, 128, 256), "MODEL.DYHEAD.NUM_CONVS", 1,
                  "MODEL.DYHEAD.USE_CHECKPOINT", False, "MODEL.DEVICE", "cpu"] + TINY_BERT_OPTS


def tiny_glip_config(*opts):
    """The GLIP-T config (configs/pretrain/glip_Swin_T_O365_GoldG.yaml) with TINY_GLIP_OPTS, then `opts`."""
    from glip.config import cfg

    c = cfg.clone()
    c.merge_from_file(str(FIXTURES / "official_configs/pretrain/glip_Swin_T_O365_GoldG.yaml"))
    c.merge_from_list(TINY_GLIP_OPTS + list(opts))
    return c
