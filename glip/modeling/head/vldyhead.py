"""The VLDyHead: a tower of fusion / text / DyConv blocks followed by the shared per-level predictors.

Key layout (as in the official checkpoints): `dyhead_tower.{i}` for the tower modules in order, then
`cls_logits`, `bbox_pred`, `centerness`, `scales.{l}.scale`, and for the dot-product token head
`dot_product_projection_text`, `log_scale`, `bias_lang`, `bias0`.
"""
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glip.layers.cpu_gemm import batched_linear
from glip.layers.scale import Scale
from glip.modeling.head.levels import flatten_level


class VLDyHead(nn.Module):
    """Fusion tower + predictors.

    Args:
        tower: the tower modules in checkpoint order; each maps `{"visual": [5 x (B, C, H_l, W_l)], "lang": dict}`
            to a dict of the same form.
        channels: visual channels C (256).
        num_classes: width of the classic `cls_logits` (DYHEAD.NUM_CLASSES - 1); kept for checkpoint
            compatibility and for the post-processor's class-vector width.
        lang_dim: text feature width (768).
        num_anchors: anchors per location (1 for GLIP).
        num_levels: number of FPN levels (one `Scale` each).
        prior_prob: focal-loss prior used to initialise biases.
        log_scale: initial value of the dot-product temperature `log_scale`.
        use_dot_product: build the region-token dot-product head (USE_DOT_PRODUCT_TOKEN_LOSS).
        use_fused_features_dot_product: score regions against the tower's fused text (True) or against the
            language backbone's `embedded` features passed to `forward` (False, GLIP-T(A)).
        clamp_dot_product: clamp the token logits to [-50000, 50000] (CLAMP_DOT_PRODUCT).
        use_contrastive_align: build the MDETR-style contrastive-alignment projections instead
            (`contrastive_align_projection_image/_text`, temperature `log_scale`).
        contrastive_dim: their width (CONTRASTIVE_HIDDEN_DIM).
        num_tokens, use_token_loss: the old per-location token classifier (USE_TOKEN_LOSS).
        mlm_head: optional masked-language-model head applied, in training, to the text the predictors read
            (MLM_LOSS).
        use_shallow_contrastive: also return the FPN features and the normalised text the shallow contrastive
            loss reads (USE_SHALLOW_CONTRASTIVE_LOSS; needs the dot-product head).

    Attribute `trim_padded_tokens` (default False, speed option): in eval mode, run the tower only on the text
    positions up to the batch's last valid token. Valid tokens never attend to padded ones (their keys get 0
    weight everywhere), so the outputs for valid tokens and all visual outputs stay the same up to fp32 rounding;
    the dropped padded columns of `dot_product_logits` are filled with `PADDED_TOKEN_LOGIT` (probability 0) and
    the dropped rows of the returned `lang["hidden"]` with zeros, instead of the reference's values.
    """

    PADDED_TOKEN_LOGIT = -50000.0

    def __init__(
        self,
        tower: Sequence[nn.Module],
        channels: int = 256,
        num_classes: int = 80,
        lang_dim: int = 768,
        num_anchors: int = 1,
        num_levels: int = 5,
        prior_prob: float = 0.01,
        log_scale: float = 0.0,
        use_dot_product: bool = True,
        use_fused_features_dot_product: bool = True,
        clamp_dot_product: bool = True,
        use_contrastive_align: bool = False,
        contrastive_dim: int = 64,
        use_token_loss: bool = False,
        num_tokens: int = 256,
        mlm_head: Optional[nn.Module] = None,
        use_shallow_contrastive: bool = False,
    ):
        super().__init__()
        if use_dot_product and use_contrastive_align:
            raise ValueError("the dot-product token head and the contrastive-align head exclude each other")
        if use_shallow_contrastive and not use_dot_product:
            raise ValueError("the shallow contrastive outputs need the dot-product head's text")
        self.dyhead_tower = nn.Sequential(*tower)
        self.use_dot_product = use_dot_product
        self.use_fused_features_dot_product = use_fused_features_dot_product
        self.clamp_dot_product = clamp_dot_product
        self.use_contrastive_align = use_contrastive_align
        self.use_token_loss = use_token_loss
        self.contrastive_dim = contrastive_dim
        self.use_shallow_contrastive = use_shallow_contrastive

        bias_value = -math.log((1 - prior_prob) / prior_prob)
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, kernel_size=1)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, kernel_size=1)
        self.centerness = nn.Conv2d(channels, num_anchors, kernel_size=1)
        for conv in (self.cls_logits, self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0.0)
        nn.init.constant_(self.cls_logits.bias, bias_value)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])

        if use_token_loss:
            self.token_logits = nn.Conv2d(channels, num_anchors * num_tokens, kernel_size=1)
            nn.init.normal_(self.token_logits.weight, std=0.01)
            nn.init.constant_(self.token_logits.bias, bias_value)
        if use_contrastive_align:
            self.contrastive_align_projection_image = nn.Conv2d(channels, num_anchors * contrastive_dim, 1)
            self.contrastive_align_projection_text = nn.Linear(channels, contrastive_dim, bias=True)
            nn.init.normal_(self.contrastive_align_projection_image.weight, std=0.01)
            nn.init.constant_(self.contrastive_align_projection_image.bias, 0.0)
            self.log_scale = nn.Parameter(torch.tensor([float(log_scale)]))
        if use_dot_product:
            self.dot_product_projection_text = nn.Linear(lang_dim, num_anchors * channels, bias=True)
            self.log_scale = nn.Parameter(torch.tensor([float(log_scale)]))
            self.bias_lang = nn.Parameter(torch.zeros(lang_dim))
            self.bias0 = nn.Parameter(torch.tensor([bias_value]))
        self.mlm_head = mlm_head
        self.trim_padded_tokens = False

    def _trimmed_length(self, language: Dict[str, torch.Tensor]) -> Optional[int]:
        """Number of leading text positions to keep when trimming is active and useful, else None."""
        masks = language.get("masks")
        if (not self.trim_padded_tokens or self.training or masks is None or not self.use_dot_product
                or self.use_contrastive_align or self.use_token_loss or self.mlm_head is not None):
            return None
        valid = torch.nonzero(masks.ne(0).any(dim=0))
        keep = int(valid.max()) + 1 if len(valid) else 1
        return keep if keep < masks.shape[1] else None

    def forward(self, features: List[torch.Tensor], language: Dict[str, torch.Tensor],
                embedding: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Run the tower and the predictors.

        Args:
            features: FPN levels, 5 x (B, C, H_l, W_l).
            language: the language dict (`hidden` (B, T, D), `masks` (B, T), `embedded`, `aggregate`).
            embedding: text features to score against when the fused ones are not used, (B, T, D).

        Returns a dict: `box_cls`, `box_regression` (after the per-level Scale), `centerness`: lists of
        (B, A*K, H_l, W_l); `dot_product_logits`: list of (B, H_l*W_l*A, T) or None; `token_logits`,
        `contrastive_logits` (list of (B, H_l*W_l*A, T)), `proj_tokens` (B, T, CONTRASTIVE_HIDDEN_DIM),
        `mlm_logits` (B, T, vocab; training only), `shallow_img_emb_feats` (the FPN levels as (B, H_l*W_l, C)) and
        `shallow_text_emb` (B, T, D) where enabled (else None); `fused_visual`: the tower's visual output;
        `lang`: the tower's language dict.
        """
        full_len = language["hidden"].shape[1]
        keep = self._trimmed_length(language)
        original = language
        if keep is not None:
            language = {k: (t[:, :keep] if k in ("hidden", "masks", "embedded") and t is not None else t)
                        for k, t in language.items()}
            embedding = embedding[:, :keep] if embedding is not None else None
        tower_out = self.dyhead_tower({"visual": list(features), "lang": language})
        if self.use_fused_features_dot_product:
            embedding = tower_out["lang"]["hidden"]
        out = self.predict(tower_out["visual"], embedding)
        out["lang"] = tower_out["lang"]
        if self.use_shallow_contrastive:
            out["shallow_img_emb_feats"] = [flatten_level(f, f.shape[1]) for f in features]
        if keep is not None:
            self._pad_trimmed_(out, original, full_len - keep)
        return out

    def predict(self, visual: List[torch.Tensor], embedding: Optional[torch.Tensor]) -> Dict[str, object]:
        """The predictors on the tower's visual levels `(B, C, H_l, W_l)` and the text features `(B, T, D)` they
        score against; the dict of `forward` without `lang`."""
        out = {"box_cls": [], "box_regression": [], "centerness": [], "dot_product_logits": None,
               "token_logits": None, "contrastive_logits": None, "proj_tokens": None, "mlm_logits": None,
               "shallow_img_emb_feats": None, "shallow_text_emb": None, "fused_visual": visual}
        if self.mlm_head is not None and self.training:
            out["mlm_logits"] = self.mlm_head(embedding)

        if self.use_dot_product:
            normed = F.normalize(embedding, p=2, dim=-1)
            proj_tokens = self.dot_product_projection_text(normed / 2.0)            # (B, T, C)
            token_bias = torch.matmul(normed, self.bias_lang) + self.bias0            # (B, T)
            inv_temp = self.log_scale.exp()
            out["dot_product_logits"] = []
            if self.use_shallow_contrastive:
                out["shallow_text_emb"] = normed
        if self.use_contrastive_align:
            out["proj_tokens"] = F.normalize(self.contrastive_align_projection_text(embedding), p=2, dim=-1)
            out["contrastive_logits"] = []
        if self.use_token_loss:
            out["token_logits"] = []

        for level, x in enumerate(visual):
            out["box_cls"].append(self.cls_logits(x))
            out["box_regression"].append(self.scales[level](self.bbox_pred(x)))
            out["centerness"].append(self.centerness(x))
            if self.use_token_loss:
                out["token_logits"].append(self.token_logits(x))
            if self.use_contrastive_align:
                queries = self.contrastive_align_projection_image(x)
                queries = F.normalize(flatten_level(queries, self.contrastive_dim), p=2, dim=-1)
                out["contrastive_logits"].append(
                    torch.matmul(queries, out["proj_tokens"].transpose(-1, -2)) / self.log_scale.exp())
            if self.use_dot_product:
                queries = flatten_level(x, x.shape[1])                                 # (B, HW, C)
                logits = batched_linear(queries, proj_tokens) / inv_temp + token_bias[:, None, :]
                if self.clamp_dot_product:
                    logits = logits.clamp(min=-50000.0, max=50000.0)
                out["dot_product_logits"].append(logits)
        return out

    def _pad_trimmed_(self, out: Dict[str, object], original: Dict[str, torch.Tensor], dropped: int) -> None:
        """Give the outputs of a trimmed run their full text length back (see `trim_padded_tokens`)."""
        out["dot_product_logits"] = [F.pad(t, (0, dropped), value=self.PADDED_TOKEN_LOGIT)
                                     for t in out["dot_product_logits"]]
        lang = dict(out["lang"])
        lang["hidden"] = F.pad(lang["hidden"], (0, 0, 0, dropped))
        lang.update({k: original[k] for k in ("masks", "embedded") if k in original})
        out["lang"] = lang
