"""Maps the official yacs keys (cfg.MODEL.LANGUAGE_BACKBONE.*) to the language backbone."""
import json
import os

from glip.modeling.language.bert import LanguageBackbone, build_bert_backbone
from glip.modeling.language.pretrained import CONFIG_FILES, resolve_pretrained

SUPPORTED_MODEL_TYPES = ("bert-base-uncased",)


def is_bert_type(model_type: str) -> bool:
    """True for "bert-base-uncased", or a local folder / installed or cached hub model whose config.json is a BERT
    config (e.g. a smaller BERT, "sentence-transformers/all-MiniLM-L6-v2")."""
    if model_type in SUPPORTED_MODEL_TYPES:
        return True
    try:
        folder = resolve_pretrained(str(model_type), CONFIG_FILES, what="config")
    except (FileNotFoundError, OSError):
        return False
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as f:
        return json.load(f).get("model_type") == "bert"


def build_language_backbone(cfg, load_pretrained: bool = False) -> LanguageBackbone:
    """Language backbone from cfg.MODEL.LANGUAGE_BACKBONE (MODEL_TYPE, N_LAYERS, USE_CHECKPOINT).

    `load_pretrained=False` builds BERT from its config only (weights come from a GLIP checkpoint);
    True loads the HF pretrained weights (as the reference does before fine-tuning/pre-training).
    Raises ValueError when the encoder's hidden width is not LANG_DIM (the width the head is built with).
    """
    lang = cfg.MODEL.LANGUAGE_BACKBONE
    if not is_bert_type(lang.MODEL_TYPE):
        raise NotImplementedError(f"language backbone MODEL_TYPE '{lang.MODEL_TYPE}' is not supported "
                                  f"(supported: {SUPPORTED_MODEL_TYPES})")
    backbone = build_bert_backbone(
        lang.MODEL_TYPE,
        num_layers=lang.N_LAYERS,
        keep_padding=cfg.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS,
        use_checkpoint=lang.USE_CHECKPOINT,
        load_pretrained=load_pretrained,
    )
    if backbone.language_dim != lang.LANG_DIM:
        raise ValueError(f"MODEL.LANGUAGE_BACKBONE.LANG_DIM is {lang.LANG_DIM} but the hidden width of "
                         f"MODEL_TYPE '{lang.MODEL_TYPE}' is {backbone.language_dim}: set LANG_DIM to "
                         f"{backbone.language_dim}")
    return backbone
