"""Early vision-language fusion of the VLDyHead: bidirectional cross-attention (GLIP "MHA-B").

`BiMultiHeadAttention` attends image->text and text->image with one shared attention matrix,
`BiAttentionBlockForCheckpoint` adds pre-LayerNorm and layer-scale residuals over all FPN levels at once, and
`VLFuse` is the dyhead tower module wrapping it (dict in, dict out).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from timm.layers import DropPath
from torch import nn

from glip.layers.blocked_attention import CLAMP_LIMIT, bi_attention_inference, blocked_bi_attention

MASKED_TEXT_LOGIT = -9e15


def _clamp(x: torch.Tensor, clamp_min: bool, clamp_max: bool) -> torch.Tensor:
    if clamp_min:
        x = x.clamp(min=-CLAMP_LIMIT)
    if clamp_max:
        x = x.clamp(max=CLAMP_LIMIT)
    return x


class BiMultiHeadAttention(nn.Module):
    """Bidirectional multi-head attention between visual tokens v (B, N, v_dim) and text tokens l (B, T, l_dim).

    A = (v_proj(v) * head_dim^-0.5) k^T with k = l_proj(l), per head: (B*heads, N, T).
    Image side: softmax over text of A + mask bias (-9e15 at padded tokens) -> values_l_proj(l) -> out_v_proj.
    Text side: softmax over ALL visual positions (no image mask) of A^T - rowmax -> values_v_proj(v) -> out_l_proj.
    The clamp flags bound the logits to +-50000 (fp16 safety in the reference). Attention dropout uses the
    float attribute `dropout`. On the CPU, `blocked_inference` (default True) selects the blocked inference
    `_forward_blocked` (`inference_block_rows` visual rows per block) and the blocked training `_forward_fused`
    (`block_rows`): same values up to fp32 rounding, about half the FLOPs, no (B*heads, N, T) tensors.
    Returns (delta_v (B, N, v_dim), delta_l (B, T, l_dim)).
    """

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, num_heads: int, dropout: float = 0.1,
                 stable_softmax_2d: bool = False, clamp_min_for_underflow: bool = False,
                 clamp_max_for_overflow: bool = False):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.v_dim = v_dim
        self.l_dim = l_dim
        self.scale = self.head_dim ** (-0.5)
        self.dropout = float(dropout)
        self.stable_softmax_2d = stable_softmax_2d
        self.clamp_min_for_underflow = clamp_min_for_underflow
        self.clamp_max_for_overflow = clamp_max_for_overflow
        self.blocked_inference = True
        self.block_rows = 256
        self.inference_block_rows = 1024

        self.v_proj = nn.Linear(v_dim, embed_dim)
        self.l_proj = nn.Linear(l_dim, embed_dim)
        self.values_v_proj = nn.Linear(v_dim, embed_dim)
        self.values_l_proj = nn.Linear(l_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, v_dim)
        self.out_l_proj = nn.Linear(embed_dim, l_dim)
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform weights and zero biases for all six projections (as the reference)."""
        for linear in (self.v_proj, self.l_proj, self.values_v_proj, self.values_l_proj,
                       self.out_v_proj, self.out_l_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, embed) -> (B*heads, S, head_dim)."""
        bsz, seq = x.shape[:2]
        return x.view(bsz, seq, self.num_heads, self.head_dim).transpose(1, 2).reshape(
            bsz * self.num_heads, seq, self.head_dim)

    def _merge(self, x: torch.Tensor, bsz: int) -> torch.Tensor:
        """(B*heads, S, head_dim) -> (B, S, embed)."""
        seq = x.shape[1]
        return x.view(bsz, self.num_heads, seq, self.head_dim).transpose(1, 2).reshape(bsz, seq, self.embed_dim)

    def _text_bias(self, attention_mask_l: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, T) 0/1 mask -> additive bias (B, T): the reference adds the mask itself with zeros replaced by -9e15
        (valid tokens get +1); built in fp32 then cast, so under fp16 padded tokens get -inf as in the reference."""
        if attention_mask_l.dim() != 2:
            raise ValueError(f"attention_mask_l must be (B, T), got {tuple(attention_mask_l.shape)}")
        return attention_mask_l.float().masked_fill(attention_mask_l == 0, MASKED_TEXT_LOGIT).to(dtype)

    def forward(self, v: torch.Tensor, l: torch.Tensor,
                attention_mask_l: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """v (B, N, v_dim), l (B, T, l_dim), attention_mask_l (B, T) or None -> (delta_v, delta_l).

        On the CPU, without autograd (inference) a blocked evaluation runs (`_forward_blocked`), with
        autograd or attention dropout (training) a blocked autograd function (`_forward_fused`); both compute the
        quantities of the reference's batched formulation (`_forward_batched`) without materialising the
        (B*heads, N, T) intermediates. On a GPU, under autocast (the reference's clamps are what keeps fp16
        finite), while exporting, with stable_softmax_2d or with `blocked_inference` False the batched
        formulation runs."""
        if (not self.blocked_inference or self.stable_softmax_2d or v.device.type != "cpu"
                or torch.is_autocast_enabled(v.device.type) or torch.compiler.is_exporting()):
            return self._forward_batched(v, l, attention_mask_l)
        if not torch.is_grad_enabled() and not (self.training and self.dropout > 0):
            return self._forward_blocked(v, l, attention_mask_l)
        return self._forward_fused(v, l, attention_mask_l)

    def _forward_batched(self, v: torch.Tensor, l: torch.Tensor,
                         attention_mask_l: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """All heads at once on (B*heads, N, T) attention maps, differentiable, as the reference."""
        bsz, tgt_len, _ = v.shape
        src_len = l.shape[1]
        query = self._heads(self.v_proj(v) * self.scale)
        key = self._heads(self.l_proj(l))
        value_v = self._heads(self.values_v_proj(v))
        value_l = self._heads(self.values_l_proj(l))

        attn = torch.bmm(query, key.transpose(1, 2))
        if self.stable_softmax_2d:
            attn = attn - attn.max()
        attn = _clamp(attn, self.clamp_min_for_underflow, self.clamp_max_for_overflow)

        attn_t = attn.transpose(1, 2)
        attn_l = attn_t - attn_t.max(dim=-1, keepdim=True)[0]
        attn_l = _clamp(attn_l, self.clamp_min_for_underflow, self.clamp_max_for_overflow).softmax(dim=-1)

        if attention_mask_l is not None:
            bias = self._text_bias(attention_mask_l, attn.dtype)
            attn = (attn.view(bsz, self.num_heads, tgt_len, src_len) + bias[:, None, None, :]).view(
                bsz * self.num_heads, tgt_len, src_len)
        attn_v = attn.softmax(dim=-1)

        attn_v = F.dropout(attn_v, p=self.dropout, training=self.training)
        attn_l = F.dropout(attn_l, p=self.dropout, training=self.training)
        out_v = self._merge(torch.bmm(attn_v, value_l), bsz)
        out_l = self._merge(torch.bmm(attn_l, value_v), bsz)
        return self.out_v_proj(out_v), self.out_l_proj(out_l)

    def _forward_blocked(self, v: torch.Tensor, l: torch.Tensor,
                         attention_mask_l: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inference evaluation: the folded formulation of `_forward_fused` per image, its visual rows in blocks of
        `inference_block_rows`, without autograd and with every product through oneDNN
        (`glip.layers.blocked_attention.bi_attention_inference`). No attention dropout (eval); never used with
        stable_softmax_2d (a global max over all heads)."""
        return self._forward_folded(v, l, attention_mask_l, inference=True)

    def _forward_fused(self, v: torch.Tensor, l: torch.Tensor,
                       attention_mask_l: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training evaluation of the folded formulation, one autograd function per image
        (`glip.layers.blocked_attention.blocked_bi_attention`, visual rows in blocks of `block_rows`, backward
        recomputing the logits block by block), with attention dropout on both softmax maps.

        Per head h (slice s of the embedding, scale c = head_dim^-0.5, v (N, v_dim)), all heads side by side:
          A_h = ((v Wq_s^T + bq_s) c) k_s^T = v (c Wq_s^T k_s^T) + c k_s bq_s         (clamped as configured)
          text side: P_l = softmax of A_h over the N positions (the reference's softmax(clamp(A^T - rowmax)): that
            clamp is a no-op in fp32); P_l^T (v Wvv_s^T + bvv_s) = (P_l^T v) Wvv_s^T + mass * bvv_s
          image side: P_v = softmax over the valid tokens of (A_h + text bias) (padded tokens get exactly 0 weight
            from their -9e15 bias), times value_l_s Wov_s^T, summed over the heads into delta_v.
        Same values and gradients as `_forward_batched` up to fp32 rounding (dropout masks aside), less than half
        its FLOPs and no (B*heads, N, T) tensors."""
        return self._forward_folded(v, l, attention_mask_l, inference=False)

    def _forward_folded(self, v: torch.Tensor, l: torch.Tensor, attention_mask_l: Optional[torch.Tensor],
                        inference: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """The folded evaluation per image: `bi_attention_inference` or the differentiable `blocked_bi_attention`."""
        bsz, n_vis, _ = v.shape
        n_txt = l.shape[1]
        key = self.l_proj(l) * self.scale                                                # (B, T, E)
        value_l = self.values_l_proj(l)                                                  # (B, T, E)
        bias = self._text_bias(attention_mask_l, v.dtype) if attention_mask_l is not None else None
        dropout = self.dropout if self.training else 0.0
        deltas, pooled, masses = [], [], []
        for b in range(bsz):
            valid = None if attention_mask_l is None else attention_mask_l[b] != 0
            if valid is not None and (bool(valid.all()) or not bool(valid.any())):
                valid = None  # nothing to drop, or nothing valid (then every token keeps the -9e15 bias)
            cols = _TokenColumns(valid, n_txt, self.num_heads, v.device)
            q_t, q_b, u = self._folded_text_side(key[b], value_l[b], cols)
            bias_v = None if bias is None else bias[b, cols.order[:cols.n_valid]].repeat(self.num_heads)
            args = (v[b], q_t, q_b, u, bias_v, self.out_v_proj.bias, self.num_heads, self.clamp_min_for_underflow,
                    self.clamp_max_for_overflow)
            if inference:
                delta_b, pooled_b = bi_attention_inference(*args, block_rows=self.inference_block_rows)
            else:
                delta_b, pooled_b, mass_b = blocked_bi_attention(*args, dropout=dropout, block_rows=self.block_rows)
                masses.append(cols.restore(mass_b[:, None]))
            deltas.append(delta_b)
            pooled.append(cols.restore(pooled_b))
        delta_v = torch.stack(deltas) if bsz > 1 else deltas[0].unsqueeze(0)
        w_vv = self.values_v_proj.weight.view(self.num_heads, self.head_dim, self.v_dim).transpose(1, 2)
        b_vv = self.values_v_proj.bias.view(self.num_heads, 1, self.head_dim)
        out_l = torch.matmul(torch.stack(pooled), w_vv)                                 # (B, H, T, d)
        # the rows of P_l^T sum to 1, or to `mass` after dropout
        out_l = out_l + (torch.stack(masses) * b_vv if masses else b_vv)
        return delta_v, self.out_l_proj(out_l.transpose(1, 2).reshape(bsz, n_txt, self.embed_dim))

    def _folded_text_side(self, key: torch.Tensor, value_l: torch.Tensor, cols: "_TokenColumns"):
        """Per image: Q^T as (v_dim, heads*T), q (heads*T,) and U (heads*T_valid, v_dim), columns in `cols` order."""
        heads, d = self.num_heads, self.head_dim
        key_h = key.view(-1, heads, d).transpose(0, 1)                                      # (H, T, d)
        q_all = torch.bmm(key_h, self.v_proj.weight.view(heads, d, self.v_dim))             # (H, T, v_dim)
        b_all = torch.bmm(key_h, self.v_proj.bias.view(heads, d, 1)).squeeze(-1)           # (H, T)
        w_ov = self.out_v_proj.weight.view(self.v_dim, heads, d).permute(1, 2, 0)            # (H, d, v_dim)
        u = torch.bmm(value_l.view(-1, heads, d).transpose(0, 1), w_ov)                     # (H, T, v_dim)
        return cols.gather(q_all).t(), cols.gather(b_all), cols.gather(u, valid_only=True)


class _TokenColumns:
    """Column order of the blocked attention: the valid tokens of every head first ([h][valid token]), then the
    padded ones ([h][padded token]); with `valid` None all tokens count as valid."""

    def __init__(self, valid, n_txt: int, heads: int, device):
        if valid is None:
            self.order = torch.arange(n_txt, device=device)
        else:
            self.order = torch.cat([torch.nonzero(valid).flatten(), torch.nonzero(~valid).flatten()])
        self.n_valid = n_txt if valid is None else int(valid.sum())
        self.n_txt = n_txt
        self.heads = heads

    def gather(self, per_head: torch.Tensor, valid_only: bool = False) -> torch.Tensor:
        """(H, T, ...) -> (H*T_valid [+ H*T_padded], ...) in column order."""
        tail = per_head.shape[2:]
        valid = per_head[:, self.order[:self.n_valid]].reshape(-1, *tail)
        if valid_only or self.n_valid == self.n_txt:
            return valid
        return torch.cat([valid, per_head[:, self.order[self.n_valid:]].reshape(-1, *tail)])

    def restore(self, columns: torch.Tensor) -> torch.Tensor:
        """(H*T, ...) in column order -> (H, T, ...) in token order."""
        tail = columns.shape[1:]
        split = self.heads * self.n_valid
        out = columns.new_empty(self.heads, self.n_txt, *tail)
        out[:, self.order[:self.n_valid]] = columns[:split].view(self.heads, self.n_valid, *tail)
        out[:, self.order[self.n_valid:]] = columns[split:].view(self.heads, self.n_txt - self.n_valid, *tail)
        return out


class BiAttentionBlockForCheckpoint(nn.Module):
    """Pre-LN bidirectional attention block over all FPN levels flattened into one visual sequence.

    forward(visual: 5 x (B, C, H_l, W_l), l (B, T, l_dim), attention_mask_l (B, T)) ->
        (5 x (B, C, H_l, W_l), l0 (B, T, l_dim)) with
        v' = LN_v(v) + drop_path(gamma_v * delta_v),  l0 = LN_l(l) + drop_path(gamma_l * delta_l)
    (the residual is on the normalised inputs, as in the reference).
    """

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, num_heads: int, dropout: float = 0.1,
                 drop_path: float = 0.0, init_values: float = 1e-4, stable_softmax_2d: bool = False,
                 clamp_min_for_underflow: bool = False, clamp_max_for_overflow: bool = False):
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(v_dim)
        self.layer_norm_l = nn.LayerNorm(l_dim)
        self.attn = BiMultiHeadAttention(v_dim, l_dim, embed_dim, num_heads, dropout=dropout,
                                         stable_softmax_2d=stable_softmax_2d,
                                         clamp_min_for_underflow=clamp_min_for_underflow,
                                         clamp_max_for_overflow=clamp_max_for_overflow)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.gamma_v = nn.Parameter(init_values * torch.ones(v_dim))
        self.gamma_l = nn.Parameter(init_values * torch.ones(l_dim))

    def single_attention_call(self, v: torch.Tensor, l: torch.Tensor,
                              attention_mask_l: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """v (B, N, v_dim), l (B, T, l_dim) -> fused (v, l) of the same shapes."""
        v = self.layer_norm_v(v)
        l = self.layer_norm_l(l)
        delta_v, delta_l = self.attn(v, l, attention_mask_l=attention_mask_l)
        if isinstance(self.drop_path, nn.Identity):  # v + gamma_v * delta_v in one pass
            return torch.addcmul(v, self.gamma_v, delta_v), torch.addcmul(l, self.gamma_l, delta_l)
        v = v + self.drop_path(self.gamma_v * delta_v)
        l = l + self.drop_path(self.gamma_l * delta_l)
        return v, l

    def forward(self, visual: Sequence[torch.Tensor], l: torch.Tensor,
                attention_mask_l: torch.Tensor = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
        bsz, channels = visual[0].shape[:2]
        sizes = [tuple(feat.shape[-2:]) for feat in visual]
        flat = torch.cat([feat.flatten(2).transpose(1, 2) for feat in visual], dim=1)
        new_v, new_l = self.single_attention_call(flat, l, attention_mask_l=attention_mask_l)
        out, start = [], 0
        for h, w in sizes:
            # (B, C, h, w) views of the (B, N, C) rows, channels-last (no copy; the DCN reads that layout)
            out.append(new_v[:, start:start + h * w].unflatten(1, (h, w)).permute(0, 3, 1, 2))
            start += h * w
        return out, new_l


class VLFuse(nn.Module):
    """Dyhead tower module doing early fusion; only the bidirectional type "MHA-B" is implemented.

    forward({"visual": 5 x (B, 256, H_l, W_l), "lang": dict with "hidden" (B, T, 768), "masks" (B, T)}) ->
    {"visual": fused levels, "lang": a copy of the lang dict with "hidden" = fused text l0}.
    `use_checkpoint` recomputes the block in backward (cfg.MODEL.DYHEAD.USE_CHECKPOINT) while training.
    """

    SUPPORTED_TYPES = ("MHA-B",)

    def __init__(self, fuse_type: str = "MHA-B", visual_dim: int = 256, lang_dim: int = 768,
                 embed_dim: int = 2048, num_heads: int = 8, dropout: float = 0.1, drop_path: float = 0.0,
                 init_values: float = 1.0 / 6, stable_softmax_2d: bool = False,
                 clamp_min_for_underflow: bool = False, clamp_max_for_overflow: bool = False,
                 use_checkpoint: bool = False):
        super().__init__()
        if fuse_type not in self.SUPPORTED_TYPES:
            raise NotImplementedError(f"VLFuse type '{fuse_type}' is not implemented "
                                      f"(supported: {self.SUPPORTED_TYPES})")
        self.fuse_type = fuse_type
        self.use_checkpoint = use_checkpoint
        self.b_attn = BiAttentionBlockForCheckpoint(
            v_dim=visual_dim, l_dim=lang_dim, embed_dim=embed_dim, num_heads=num_heads, dropout=dropout,
            drop_path=drop_path, init_values=init_values, stable_softmax_2d=stable_softmax_2d,
            clamp_min_for_underflow=clamp_min_for_underflow, clamp_max_for_overflow=clamp_max_for_overflow)

    def forward(self, x: dict) -> dict:
        lang = x["lang"]
        args = (list(x["visual"]), lang["hidden"], lang["masks"])
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            visual, l0 = checkpoint.checkpoint(self.b_attn, *args, use_reentrant=False)
        else:
            visual, l0 = self.b_attn(*args)
        new_lang = dict(lang)
        new_lang["hidden"] = l0
        return {"visual": visual, "lang": new_lang}


def build_vlfuse(cfg) -> VLFuse:
    """VLFuse from cfg.MODEL.DYHEAD (FUSE_CONFIG.*, NUM_CONVS, USE_CHECKPOINT) and cfg.MODEL.LANGUAGE_BACKBONE."""
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    lang = cfg.MODEL.LANGUAGE_BACKBONE
    if fuse.TYPE == "MHA-B" and fuse.SEPARATE_BIDIRECTIONAL:
        raise NotImplementedError("VLFuse MHA-B with FUSE_CONFIG.SEPARATE_BIDIRECTIONAL is not implemented")
    from glip.modeling.language.build import is_bert_type

    known = lang.MODEL_TYPE in ("roberta-base", "clip") or is_bert_type(lang.MODEL_TYPE)
    lang_dim = lang.LANG_DIM if known else 1024
    return VLFuse(
        fuse_type=fuse.TYPE,
        visual_dim=fuse.JOINT_EMB_SIZE,
        lang_dim=lang_dim,
        embed_dim=fuse.get("ATTN_EMBED_DIM", 2048),  # project key; a reference config dump lacks it
        num_heads=8,
        dropout=0.1,
        drop_path=0.0,
        init_values=1.0 / cfg.MODEL.DYHEAD.NUM_CONVS,
        stable_softmax_2d=fuse.STABLE_SOFTMAX_2D,
        clamp_min_for_underflow=fuse.CLAMP_MIN_FOR_UNDERFLOW,
        clamp_max_for_overflow=fuse.CLAMP_MAX_FOR_OVERFLOW,
        use_checkpoint=getattr(cfg.MODEL.DYHEAD, "USE_CHECKPOINT", False),
    )
