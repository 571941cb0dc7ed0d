"""BERT text encoder of GLIP: HF `BertModel` (no pooler) producing the language feature dict of the head."""
import logging

import torch
from torch import nn
from transformers import BertConfig, BertModel

from glip.text.pretrained import CONFIG_FILES, WEIGHT_FILES, resolve_pretrained

logger = logging.getLogger(__name__)


def load_bert_config(name_or_path: str = "bert-base-uncased") -> BertConfig:
    """The BertConfig of a hub id / local folder (offline: HF cache, else the shipped bert-base-uncased config)."""
    source = resolve_pretrained(name_or_path, CONFIG_FILES, what="BERT config")
    config = BertConfig.from_pretrained(source)
    config._attn_implementation = "eager"
    return config


class BertEncoder(nn.Module):
    """`model` = BertModel(add_pooling_layer=False, eager attention); returns GLIP's language dict.

    forward(input_ids (B, L), attention_mask (B, L)) -> {
        "hidden":    (B, L, 768) last-layer states of every position (padding included),
        "masks":     (B, L) the attention mask as given,
        "embedded":  (B, L, 768) mean of the last `num_layers` layers / num_layers, times the mask,
        "aggregate": (B, 768) sum of `embedded` over tokens / number of valid tokens}.
    With `keep_padding=False` (no dot-product token loss in the reference) BERT only sees the first
    `max(non-zero ids)` positions, and hidden/embedded are that long.
    """

    def __init__(self, config: BertConfig, num_layers: int = 1, keep_padding: bool = True,
                 use_checkpoint: bool = False, pretrained_source: str = None):
        super().__init__()
        if pretrained_source is not None:
            self.model = BertModel.from_pretrained(pretrained_source, config=config, add_pooling_layer=False,
                                                   attn_implementation="eager")
        else:
            self.model = BertModel(config, add_pooling_layer=False)
        if use_checkpoint:
            self.model.gradient_checkpointing_enable()
        self.language_dim = config.hidden_size
        self.num_layers = num_layers
        self.keep_padding = keep_padding

    @property
    def config(self) -> BertConfig:
        """The BertConfig the encoder was built from (the head's text layers are sized by it)."""
        return self.model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        ids, mask = input_ids, attention_mask
        if not self.keep_padding:
            max_len = int((input_ids != 0).sum(1).max().item())
            ids, mask = input_ids[:, :max_len], attention_mask[:, :max_len]
        outputs = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        layers = outputs.hidden_states[1:]
        features = torch.stack(layers[-self.num_layers:], 1).mean(1) / self.num_layers
        embedded = features * mask.unsqueeze(-1).float()
        aggregate = embedded.sum(1) / attention_mask.sum(-1).unsqueeze(-1).float()
        return {"aggregate": aggregate, "embedded": embedded, "masks": attention_mask, "hidden": layers[-1]}


class LanguageBackbone(nn.Module):
    """Holds the text encoder as `.body` (state-dict keys `language_backbone.body.model.*`).

    MODEL.LANGUAGE_BACKBONE.FREEZE (no gradients, eval mode in training) is the detector's freeze policy
    (`glip.modeling.freezing`).
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    @property
    def language_dim(self) -> int:
        return self.body.language_dim

    @property
    def config(self) -> BertConfig:
        """The text encoder's BertConfig."""
        return self.body.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        return self.body(input_ids, attention_mask)


def build_bert_backbone(model_type: str = "bert-base-uncased", num_layers: int = 1, keep_padding: bool = True,
                        use_checkpoint: bool = False, load_pretrained: bool = False) -> LanguageBackbone:
    """BERT language backbone; random init unless `load_pretrained` (then HF pretrained weights are loaded)."""
    config = load_bert_config(model_type)
    source = resolve_pretrained(model_type, WEIGHT_FILES, what="BERT weights") if load_pretrained else None
    body = BertEncoder(config, num_layers=num_layers, keep_padding=keep_padding, use_checkpoint=use_checkpoint,
                       pretrained_source=source)
    logger.info("Language backbone %s (%s weights, %d layer(s) averaged)", model_type,
                "pretrained" if load_pretrained else "random", num_layers)
    return LanguageBackbone(body)
