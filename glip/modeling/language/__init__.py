"""Language side of GLIP: tokenizer and BERT text encoder."""
from glip.modeling.language.bert import BertEncoder, LanguageBackbone, build_bert_backbone, load_bert_config
from glip.modeling.language.build import build_language_backbone
from glip.text.tokenizer import build_tokenizer

__all__ = ["BertEncoder", "LanguageBackbone", "build_bert_backbone", "build_language_backbone",
           "build_tokenizer", "load_bert_config"]
