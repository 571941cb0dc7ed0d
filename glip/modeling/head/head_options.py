"""Which combinations of the head's optional parts run; the others are refused by name before the model is built.

The reference's code decides what runs: where it asserts, or where its tensors cannot fit together (it fails with
a shape error), the combination is refused here with the keys and the reason, instead of computing something the
reference never computed.

* USE_CONTRASTIVE_ALIGN_LOSS excludes USE_DOT_PRODUCT_TOKEN_LOSS (the reference asserts it).
* EARLY_FUSE_ON needs USE_DOT_PRODUCT_TOKEN_LOSS: without it the reference's language backbone cuts the text to
  the longest caption while the text masks keep MAX_QUERY_LEN positions, and the fusion layers fail.
* The text the predictors read (the reference's `embedding`) must have the width each consumer expects: the fused
  text (USE_FUSED_FEATURES_DOT_PRODUCT) is the language model's hidden size, the resized text (contrastive align)
  FUSE_CONFIG.JOINT_EMB_SIZE, the backbone's `embedded` text (dot product) the hidden size; the contrastive text
  projection reads MODEL.DYHEAD.CHANNELS, the MLM head the hidden size.
* USE_TOKEN_LOSS needs PAD_MAX: its classifier has MAX_QUERY_LEN outputs per anchor, and the reference's token
  loss masks them with the text mask, which is only that wide when captions are padded to MAX_QUERY_LEN.
* USE_SHALLOW_CONTRASTIVE_LOSS needs the dot-product head (its text) and 256-token text (MAX_QUERY_LEN 256,
  PAD_MAX): the reference's loss has no text otherwise and hard-codes 256 tokens per caption.
* USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS is refused: it reads the C4 features that only the reference's VL Swin
  backbone (MODEL.SWINT.VERSION containing "vl") returns; with any other backbone the reference's head iterates
  over None and fails, and this project has no VL Swin.
* ADD_LINEAR_LAYER with USE_CONTRASTIVE_ALIGN_LOSS is not implemented (the reference adds the LANG_DIM-wide prompt
  offset to the resized text).
"""
from typing import Optional

from glip.utils.errors import ConfigError

_FUSE = "MODEL.DYHEAD.FUSE_CONFIG."


class UnsupportedCombinationError(ConfigError, NotImplementedError):
    """A combination of the head's options that the reference cannot run (one line naming the keys; the tools
    print it and exit with status 2)."""


def text_embedding_width(cfg, hidden_size: int) -> Optional[int]:
    """Width of the text features the predictors read, or None when the head has none."""
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    if fuse.USE_FUSED_FEATURES_DOT_PRODUCT:
        return hidden_size
    if fuse.USE_CONTRASTIVE_ALIGN_LOSS:
        return fuse.JOINT_EMB_SIZE
    if fuse.USE_DOT_PRODUCT_TOKEN_LOSS:
        return hidden_size
    return None


def _refuse(message: str):
    raise UnsupportedCombinationError(message)


def _check_text_width(cfg, hidden_size: int) -> None:
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    width = text_embedding_width(cfg, hidden_size)
    readers = []
    if fuse.USE_CONTRASTIVE_ALIGN_LOSS:
        readers.append((_FUSE + "USE_CONTRASTIVE_ALIGN_LOSS", "MODEL.DYHEAD.CHANNELS", cfg.MODEL.DYHEAD.CHANNELS))
    if fuse.MLM_LOSS:
        readers.append((_FUSE + "MLM_LOSS", "the language model's hidden size", hidden_size))
    for key, expected_from, expected in readers:
        if width is None:
            _refuse("{} True needs text features, which the reference's head has only with USE_DOT_PRODUCT_TOKEN_LOSS, "
                    "USE_CONTRASTIVE_ALIGN_LOSS or USE_FUSED_FEATURES_DOT_PRODUCT".format(key))
        if width != expected:
            _refuse("{} True reads {}-wide text ({} = {}), but the head's text is {} wide here (USE_FUSED_FEATURES_"
                    "DOT_PRODUCT {}, JOINT_EMB_SIZE {}); the reference's code fails on this combination".format(
                        key, expected, expected_from, expected, width, fuse.USE_FUSED_FEATURES_DOT_PRODUCT,
                        fuse.JOINT_EMB_SIZE))


def _check_shallow(cfg) -> None:
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    if fuse.USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS:
        _refuse(_FUSE + "USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS True is not supported: it needs the C4 features of the "
                "reference's VL Swin backbone (MODEL.SWINT.VERSION containing 'vl'), which this project does not have; "
                "with any other backbone the reference's head fails on the missing features")
    if not fuse.USE_SHALLOW_CONTRASTIVE_LOSS:
        return
    lang = cfg.MODEL.LANGUAGE_BACKBONE
    if not fuse.USE_DOT_PRODUCT_TOKEN_LOSS:
        _refuse(_FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS True needs USE_DOT_PRODUCT_TOKEN_LOSS True: the reference's loss "
                "reads the dot-product head's text (it fails without it)")
    if lang.MAX_QUERY_LEN != 256 or not lang.PAD_MAX:
        _refuse(_FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS True needs 256-token text (MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN "
                "256 and PAD_MAX True; got {} / {}): the reference's loss assumes 256 tokens per caption".format(
                    lang.MAX_QUERY_LEN, lang.PAD_MAX))


def check_head_options(cfg, hidden_size: Optional[int] = None) -> None:
    """Raise `UnsupportedCombinationError` (a NotImplementedError) naming the keys of a combination the reference
    cannot run (module docstring). `hidden_size`: the language model's hidden size; None (the tools' check when the
    config is merged, before the language model is known) skips the text-width checks, which the builder makes."""
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    if fuse.USE_CONTRASTIVE_ALIGN_LOSS and fuse.USE_DOT_PRODUCT_TOKEN_LOSS:
        _refuse(_FUSE + "USE_CONTRASTIVE_ALIGN_LOSS and USE_DOT_PRODUCT_TOKEN_LOSS cannot both be True: the reference "
                "asserts that the two heads exclude each other")
    if fuse.EARLY_FUSE_ON and not fuse.USE_DOT_PRODUCT_TOKEN_LOSS:
        _refuse(_FUSE + "EARLY_FUSE_ON True needs USE_DOT_PRODUCT_TOKEN_LOSS True: without it the reference's language "
                "backbone cuts the text to the longest caption while the masks keep MAX_QUERY_LEN positions, and its "
                "fusion layers fail")
    if fuse.USE_CONTRASTIVE_ALIGN_LOSS and fuse.ADD_LINEAR_LAYER:
        _refuse(_FUSE + "ADD_LINEAR_LAYER with USE_CONTRASTIVE_ALIGN_LOSS is not implemented (the reference adds the "
                "LANG_DIM-wide prompt offset to the resized text)")
    if fuse.USE_TOKEN_LOSS and not cfg.MODEL.LANGUAGE_BACKBONE.PAD_MAX:
        _refuse(_FUSE + "USE_TOKEN_LOSS True needs MODEL.LANGUAGE_BACKBONE.PAD_MAX True: the token classifier has "
                "MAX_QUERY_LEN outputs and the reference's token loss fails on shorter text masks")
    if hidden_size is not None:
        _check_text_width(cfg, hidden_size)
    _check_shallow(cfg)
