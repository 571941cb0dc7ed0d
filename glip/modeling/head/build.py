"""Builders that map the official config keys (MODEL.DYHEAD.*, MODEL.RPN.*, MODEL.ATSS.*) to the head modules."""
import logging

from torch import nn

from glip.modeling.head.anchor_generator import build_anchor_generator
from glip.modeling.head.atss_loss import build_atss_loss
from glip.modeling.head.atss_postprocessor import build_atss_postprocessor
from glip.modeling.head.bert_layer import build_bert_encoder_layer
from glip.modeling.head.box_coder import build_box_coder
from glip.modeling.head.dyconv import build_dyconv
from glip.modeling.head.feature_resizer import FeatureResizer
from glip.modeling.head.fusion import build_vlfuse
from glip.modeling.head.head_options import check_head_options
from glip.modeling.head.rpn import VLDyHeadModule
from glip.modeling.head.vldyhead import VLDyHead

logger = logging.getLogger(__name__)


class PassThrough(nn.Module):
    """Tower slot without parameters (the reference's DummyLayer): returns its input dict unchanged."""

    def forward(self, inputs):
        return inputs


def build_tower(cfg, language_config) -> list:
    """The tower modules in checkpoint order; `language_config` is the language backbone's BertConfig.

    With EARLY_FUSE_ON each block is [VLFuse, BertEncoderLayer, DyConv] (the last block's text layer is a
    pass-through unless USE_FUSED_FEATURES_DOT_PRODUCT); otherwise the tower is DyConv blocks only (GLIP-T(A)).
    """
    head = cfg.MODEL.DYHEAD
    fuse = head.FUSE_CONFIG
    from glip.modeling.language.build import is_bert_type

    if not is_bert_type(cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE) and fuse.EARLY_FUSE_ON:
        raise NotImplementedError(
            f"MODEL.LANGUAGE_BACKBONE.MODEL_TYPE {cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE!r}: only BERT text layers "
            "are implemented in the fusion tower")
    tower = []
    for i in range(head.NUM_CONVS):
        if fuse.EARLY_FUSE_ON:
            tower.append(build_vlfuse(cfg))
            if i < head.NUM_CONVS - 1 or fuse.USE_FUSED_FEATURES_DOT_PRODUCT:
                tower.append(build_bert_encoder_layer(cfg, language_config))
            else:
                tower.append(PassThrough())
        tower.append(build_dyconv(cfg, i))
    return tower


def build_vldyhead(cfg, language_config) -> VLDyHead:
    """The VLDyHead from MODEL.DYHEAD.*; `language_config` (the language backbone's BertConfig) sizes the tower's
    text layers and the MLM head."""
    head = cfg.MODEL.DYHEAD
    fuse = head.FUSE_CONFIG
    mlm_head = None
    if fuse.MLM_LOSS:
        from transformers.models.bert.modeling_bert import BertLMPredictionHead

        mlm_head = BertLMPredictionHead(language_config)
    return VLDyHead(
        tower=build_tower(cfg, language_config),
        channels=head.CHANNELS,
        num_classes=head.NUM_CLASSES - 1,
        lang_dim=cfg.MODEL.LANGUAGE_BACKBONE.LANG_DIM,
        num_anchors=len(cfg.MODEL.RPN.ASPECT_RATIOS) * cfg.MODEL.RPN.SCALES_PER_OCTAVE,
        num_levels=len(cfg.MODEL.RPN.ANCHOR_STRIDE),
        prior_prob=head.PRIOR_PROB,
        log_scale=head.LOG_SCALE,
        use_dot_product=fuse.USE_DOT_PRODUCT_TOKEN_LOSS,
        use_fused_features_dot_product=fuse.USE_FUSED_FEATURES_DOT_PRODUCT,
        clamp_dot_product=fuse.CLAMP_DOT_PRODUCT,
        use_contrastive_align=fuse.USE_CONTRASTIVE_ALIGN_LOSS,
        contrastive_dim=fuse.CONTRASTIVE_HIDDEN_DIM,
        use_token_loss=fuse.USE_TOKEN_LOSS,
        num_tokens=cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN,
        mlm_head=mlm_head,
        use_shallow_contrastive=fuse.USE_SHALLOW_CONTRASTIVE_LOSS,
    )


def build_rpn(cfg, language_config) -> VLDyHeadModule:
    """The VLDyHead module (`model.rpn`) for MODEL.RPN_ARCHITECTURE VLDYHEAD.

    `language_config`: the language backbone's transformers BertConfig (`language_backbone.config`); the head's
    BERT text layers and MLM head take their sizes from it. Combinations of the optional parts that the reference
    cannot run are refused first (`glip.modeling.head.head_options`).
    """
    if cfg.MODEL.RPN_ARCHITECTURE != "VLDYHEAD":
        raise ValueError(f"MODEL.RPN_ARCHITECTURE {cfg.MODEL.RPN_ARCHITECTURE!r} is not supported (only VLDYHEAD)")
    fuse = cfg.MODEL.DYHEAD.FUSE_CONFIG
    check_head_options(cfg, language_config.hidden_size)
    resizer = None
    if fuse.USE_CONTRASTIVE_ALIGN_LOSS:
        resizer = FeatureResizer(cfg.MODEL.LANGUAGE_BACKBONE.LANG_DIM, fuse.JOINT_EMB_SIZE, fuse.JOINT_EMB_DROPOUT)
    box_coder = build_box_coder(cfg)
    return VLDyHeadModule(
        head=build_vldyhead(cfg, language_config),
        anchor_generator=build_anchor_generator(cfg),
        loss_evaluator=build_atss_loss(cfg, box_coder),
        box_selector_test=build_atss_postprocessor(cfg, box_coder, is_train=False),
        lang_dim=cfg.MODEL.LANGUAGE_BACKBONE.LANG_DIM,
        add_linear_layer=fuse.ADD_LINEAR_LAYER,
        loss_weights={"loss_cls": 1.0 if fuse.USE_CLASSIFICATION_LOSS else 0.0,  # reported as 0 x loss
                      "loss_token": fuse.TOKEN_LOSS_WEIGHT,
                      "loss_contrastive_align": fuse.CONTRASTIVE_ALIGN_LOSS_WEIGHT,
                      "loss_dot_product_token": fuse.DOT_PRODUCT_TOKEN_LOSS_WEIGHT,
                      "mlm_loss": fuse.MLM_LOSS_COEF,
                      "loss_shallow_contrastive": fuse.SHALLOW_CONTRASTIVE_LOSS_WEIGHT},
        resizer=resizer,
    )
