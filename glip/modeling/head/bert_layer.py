"""Text self-attention layer of the VLDyHead: one post-LN BERT encoder layer with fp16-safety clamps.

Same parameters/keys as a HF BERT layer (`attention.self.query/key/value`, `attention.output.dense/LayerNorm`,
`intermediate.dense`, `output.dense/LayerNorm`), randomly initialised with PyTorch defaults like the reference.
Attention scores are clamped to +-50000 before the mask is added (optional flags); the feed-forward activations
are always clamped to +-50000 around the activation and the output LayerNorm.
"""
import math

import torch
from torch import nn
from transformers.activations import ACT2FN

CLAMP_LIMIT = 50000.0


def clamp_values(x: torch.Tensor, limit: float = CLAMP_LIMIT) -> torch.Tensor:
    return x.clamp(min=-limit, max=limit)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention; forward(hidden (B, T, D), additive mask (B, 1, 1, T)) -> (B, T, D)."""

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float,
                 clamp_min_for_underflow: bool = False, clamp_max_for_overflow: bool = False):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(attention_dropout)
        self.clamp_min_for_underflow = clamp_min_for_underflow
        self.clamp_max_for_overflow = clamp_max_for_overflow

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, head_dim)."""
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor = None) -> torch.Tensor:
        query = self._heads(self.query(hidden))
        key = self._heads(self.key(hidden))
        value = self._heads(self.value(hidden))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if self.clamp_min_for_underflow:
            scores = scores.clamp(min=-CLAMP_LIMIT)
        if self.clamp_max_for_overflow:
            scores = scores.clamp(max=CLAMP_LIMIT)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = self.dropout(scores.softmax(dim=-1))
        context = torch.matmul(probs, value).permute(0, 2, 1, 3).contiguous()
        return context.view(*context.shape[:-2], -1)


class BertSelfOutput(nn.Module):
    """LayerNorm(dense(x) + residual)."""

    def __init__(self, hidden_size: int, layer_norm_eps: float, hidden_dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    """Self-attention followed by its output projection (keys `self.*`, `output.*`)."""

    def __init__(self, hidden_size: int, num_heads: int, layer_norm_eps: float, hidden_dropout: float,
                 attention_dropout: float, clamp_min_for_underflow: bool = False,
                 clamp_max_for_overflow: bool = False):
        super().__init__()
        self.self = BertSelfAttention(hidden_size, num_heads, attention_dropout,
                                      clamp_min_for_underflow, clamp_max_for_overflow)
        self.output = BertSelfOutput(hidden_size, layer_norm_eps, hidden_dropout)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor = None) -> torch.Tensor:
        return self.output(self.self(hidden, attention_mask), hidden)


class BertIntermediate(nn.Module):
    """clamp(act(clamp(dense(x))))."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[hidden_act] if isinstance(hidden_act, str) else hidden_act

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return clamp_values(self.intermediate_act_fn(clamp_values(self.dense(hidden))))


class BertOutput(nn.Module):
    """clamp(LayerNorm(clamp(dense(x)) + residual))."""

    def __init__(self, intermediate_size: int, hidden_size: int, layer_norm_eps: float, hidden_dropout: float):
        super().__init__()
        self.dense = nn.Linear(intermediate_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        hidden = clamp_values(self.dropout(self.dense(hidden)))
        return clamp_values(self.LayerNorm(hidden + residual))


class BertEncoderLayer(nn.Module):
    """Dyhead tower module refining the text features with one BERT layer.

    forward({"visual": ..., "lang": dict with "hidden" (B, T, D), "masks" (B, T) 0/1}) ->
    {"visual": unchanged, "lang": a copy of the lang dict with the new "hidden" (B, T, D)}.
    Padded keys get the additive bias finfo(dtype).min (as HF `get_extended_attention_mask`).
    Dropout modules keep their probability in `.p`.
    """

    def __init__(self, hidden_size: int = 768, num_attention_heads: int = 12, intermediate_size: int = 3072,
                 hidden_act: str = "gelu", layer_norm_eps: float = 1e-12, hidden_dropout_prob: float = 0.1,
                 attention_probs_dropout_prob: float = 0.1, clamp_min_for_underflow: bool = False,
                 clamp_max_for_overflow: bool = False):
        super().__init__()
        self.attention = BertAttention(hidden_size, num_attention_heads, layer_norm_eps, hidden_dropout_prob,
                                       attention_probs_dropout_prob, clamp_min_for_underflow,
                                       clamp_max_for_overflow)
        self.intermediate = BertIntermediate(hidden_size, intermediate_size, hidden_act)
        self.output = BertOutput(intermediate_size, hidden_size, layer_norm_eps, hidden_dropout_prob)

    @staticmethod
    def extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, T) 0/1 -> additive (B, 1, 1, T): 0 for valid keys, finfo(dtype).min for padding."""
        mask = mask[:, None, None, :].to(dtype)
        return (1.0 - mask) * torch.finfo(dtype).min

    def forward(self, inputs: dict) -> dict:
        lang = inputs["lang"]
        hidden = lang["hidden"]
        mask = self.extended_attention_mask(lang["masks"], hidden.dtype)
        attention_output = self.attention(hidden, mask)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        new_lang = dict(lang)
        new_lang["hidden"] = layer_output
        return {"visual": inputs["visual"], "lang": new_lang}


def build_bert_encoder_layer(cfg, bert_config) -> BertEncoderLayer:
    """BertEncoderLayer with the language backbone's BERT config (`bert_config`, a transformers BertConfig:
    hidden size, heads, feed-forward width, activation, LayerNorm eps, dropouts) and
    cfg.MODEL.DYHEAD.FUSE_CONFIG.CLAMP_BERTATTN_*."""
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    return BertEncoderLayer(
        hidden_size=bert_config.hidden_size,
        num_attention_heads=bert_config.num_attention_heads,
        intermediate_size=bert_config.intermediate_size,
        hidden_act=bert_config.hidden_act,
        layer_norm_eps=bert_config.layer_norm_eps,
        hidden_dropout_prob=bert_config.hidden_dropout_prob,
        attention_probs_dropout_prob=bert_config.attention_probs_dropout_prob,
        clamp_min_for_underflow=fuse.CLAMP_BERTATTN_MIN_FOR_UNDERFLOW,
        clamp_max_for_overflow=fuse.CLAMP_BERTATTN_MAX_FOR_OVERFLOW,
    )
