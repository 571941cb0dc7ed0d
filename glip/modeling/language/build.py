"""Maps the official yacs keys (cfg.MODEL.LANGUAGE_BACKBONE.*) to the language backbone."""
import json
import os

from glip.modeling.language.bert import LanguageBackbone, build_bert_backbone

SUPPORTED_MODEL_TYPES = ("bert-base-uncased",)


def is_bert_type(model_type: str) -> bool:
    """True for "bert-base-uncased" or a local folder whose config.json is a BERT config (e.g. a smaller BERT)."""
    if model_type in SUPPORTED_MODEL_TYPES:
        return True
    config = os.path.join(str(model_type), "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as f:
        return json.load(f).get("model_type") == "bert"


def build_language_backbone(cfg, load_pretrained: bool = False) -> LanguageBackbone:
    """Language backbone from cfg.MODEL.LANGUAGE_BACKBONE (MODEL_TYPE, N_LAYERS, USE_CHECKPOINT).

    `load_pretrained=False` builds BERT from its config only (weights come from a GLIP checkpoint);
    True loads the HF pretrained weights (as the reference does before fine-tuning/pre-training).
    """
    lang = cfg.MODEL.LANGUAGE_BACKBONE
    if not is_bert_type(lang.MODEL_TYPE):
        raise NotImplementedError(f"language backbone MODEL_TYPE '{lang.MODEL_TYPE}' is not supported "
                                  f"(supported: {SUPPORTED_MODEL_TYPES})")
    return build_bert_backbone(
        lang.MODEL_TYPE,
        num_layers=lang.N_LAYERS,
        keep_padding=cfg.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS,
        use_checkpoint=lang.USE_CHECKPOINT,
        load_pretrained=load_pretrained,
    )
