"""Training steps (and evaluation) of a tiny GLIP with each optional part on: MLM, contrastive align, the token
classifier, the shallow contrastive loss. Each loss is named as in the reference, weighted by its key, and trains
the parameters its part adds."""
import random

import pytest
import torch
import torch.nn.functional as F
from helpers.stochastic import no_dropout
from helpers.tiny import tiny_glip_config

from glip.data.grounding_target import attach_fields, prepare_grounding_target
from glip.modeling.detector import build_detection_model
from glip.modeling.language.mlm_masking import mask_tokens
from glip.structures.bounding_box import BoxList

FUSE = "MODEL.DYHEAD.FUSE_CONFIG."
CAPTIONS = ["a black cat. a small dog", "person. bicycle. car"]
PHRASES = [["a black cat", "a small dog"], ["person", "car"]]
CONTRASTIVE = [FUSE + "USE_CONTRASTIVE_ALIGN_LOSS", True, FUSE + "USE_DOT_PRODUCT_TOKEN_LOSS", False,
               FUSE + "EARLY_FUSE_ON", False, FUSE + "USE_FUSED_FEATURES_DOT_PRODUCT", False]


def _batch(tokenizer):
    """Images (2, 3, 48, 64) and grounding targets with every field the datasets attach."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 48, 64, generator=gen)
    targets = []
    for caption, phrases in zip(CAPTIONS, PHRASES):
        spans = [[caption.index(p), caption.index(p) + len(p)] for p in phrases]
        annotations = [{"bbox": [4.0 + 20 * k, 6.0, 30.0 + 20 * k, 40.0], "category_id": k + 1, "tokens_positive":
                        [span], "original_od_label": k + 1} for k, span in enumerate(spans)]
        fields = prepare_grounding_target((64, 48), annotations, 1, caption=caption, tokenizer=tokenizer,
                                          box_format="xyxy", greenlight_spans=spans,
                                          label_to_positions={k + 1: s for k, s in enumerate(spans)})
        target = BoxList(fields["boxes"], (64, 48), mode="xyxy")
        targets.append(attach_fields(target, fields))
    positive_map = torch.cat([t.get_field("positive_map") for t in targets]).bool().float()
    return images, targets, positive_map


def _model(*opts, pad_max=False):
    """A tiny GLIP in train mode; text padded to the batch's longest caption unless `pad_max` (cheaper)."""
    torch.manual_seed(0)
    return build_detection_model(tiny_glip_config("MODEL.LANGUAGE_BACKBONE.PAD_MAX", pad_max, *opts)).train()


def _train_forward(model, backward=False, seed=0):
    random.seed(seed)
    images, targets, positive_map = _batch(model.tokenizer)
    model.zero_grad(set_to_none=True)
    with no_dropout(model, drop_path=True):
        losses = model(images, targets=targets, captions=CAPTIONS, positive_map=positive_map)
        if backward:
            sum(losses.values()).backward()
    return losses


def _raw(model, name):
    """The loss `name` of the same batch again with its weight set to 1."""
    weight = model.rpn.loss_weights[name]
    model.rpn.loss_weights[name] = 1.0
    try:
        with torch.no_grad():
            return _train_forward(model)[name]
    finally:
        model.rpn.loss_weights[name] = weight


def _grad(model, prefix):
    return sum(p.grad.abs().sum().item() for n, p in model.named_parameters() if n.startswith(prefix)
               and p.grad is not None)


def _evaluate(model, label_to_tokens):
    """Eval-mode detections and the head outputs they came from."""
    model.eval()
    outputs = {}
    handle = model.rpn.register_forward_hook(lambda m, args, out: outputs.update(out))
    images, _, _ = _batch(model.tokenizer)
    with torch.no_grad():
        detections = model(images, captions=CAPTIONS, positive_map=label_to_tokens)
    handle.remove()
    return detections, outputs


def _same_detections(ours, ref):
    for got, want in zip(ours, ref):
        assert torch.equal(got.bbox, want.bbox) and torch.equal(got.get_field("scores"), want.get_field("scores"))
        assert torch.equal(got.get_field("labels"), want.get_field("labels"))


class _AlwaysSelect:
    """Every draw selects the position for [MASK]."""

    def random(self):
        return 0.01


def test_mlm_masks_in_training_and_adds_the_weighted_cross_entropy():
    model = _model(FUSE + "MLM_LOSS", True, FUSE + "MLM_LOSS_COEF", 0.5, FUSE + "MLM_LOSS_FOR_ONLY_POSITIVES", False)
    seen = {}
    model.language_backbone.register_forward_pre_hook(lambda m, args: seen.__setitem__("ids", args[0].clone()))
    model.rpn.head.mlm_head.register_forward_hook(lambda m, args, out: seen.__setitem__("logits", out.detach()))
    model.token_masker.rng = random.Random(3)
    losses = _train_forward(model, backward=True)
    plain = model.tokenize(CAPTIONS, "cpu")["input_ids"]
    ids, labels = mask_tokens(plain, model.tokenizer.mask_token_id, model.token_masker.vocab_ids,
                              model.tokenizer.pad_token_id, rng=random.Random(3))
    assert torch.equal(seen["ids"], ids) and not torch.equal(ids, plain)
    expected = F.cross_entropy(seen["logits"].reshape(-1, seen["logits"].shape[-1]), labels.reshape(-1),
                               ignore_index=-100)
    assert set(losses) == {"loss_reg", "loss_centerness", "loss_cls", "loss_dot_product_token", "mlm_loss"}
    torch.testing.assert_close(losses["mlm_loss"].detach(), 0.5 * expected)
    assert _grad(model, "rpn.head.mlm_head.") > 0
    # MLM_LOSS_FOR_ONLY_POSITIVES: only the targets' greenlight tokens are in the loss
    model.token_masker.only_positives, model.token_masker.rng = True, _AlwaysSelect()
    captured = {}
    model.rpn.loss_evaluator.register_forward_pre_hook(lambda m, a, kwargs: captured.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        _train_forward(model)
    _, targets, _ = _batch(model.tokenizer)
    green = torch.stack([t.get_field("greenlight_map") for t in targets])
    labelled = captured["mlm_labels"] != -100
    assert torch.equal(labelled, green[:, :labelled.shape[1]] == 1)
    assert labelled.sum() == 8 == (green == 1).sum()   # "a black cat", "a small dog", person, car
    _evaluate(model, {1: [1, 2, 3]})
    assert torch.equal(seen["ids"], plain)          # no masking in evaluation


def test_contrastive_align_trains_its_projections_and_evaluates_on_cls_logits():
    model = _model(*CONTRASTIVE, FUSE + "CONTRASTIVE_ALIGN_LOSS_WEIGHT", 0.5)
    losses = _train_forward(model, backward=True)
    assert set(losses) == {"loss_reg", "loss_centerness", "loss_cls", "loss_contrastive_align"}
    assert torch.isfinite(losses["loss_contrastive_align"]) and losses["loss_contrastive_align"] > 0
    for prefix in ("rpn.resizer.", "rpn.head.contrastive_align_projection_image.",
                   "rpn.head.contrastive_align_projection_text.", "rpn.head.log_scale"):
        assert _grad(model, prefix) > 0, prefix
    torch.testing.assert_close(losses["loss_contrastive_align"].detach(), 0.5 * _raw(model, "loss_contrastive_align"))
    detections, outputs = _evaluate(model, {1: [1, 2, 3]})
    assert outputs["contrastive_logits"] is not None
    with torch.no_grad():
        by_cls = model.rpn.box_selector_test(outputs["box_regression"], outputs["centerness"], outputs["anchors"],
                                             box_cls=outputs["box_cls"])
    _same_detections(detections, by_cls)


def test_token_loss_is_weighted_and_scored_at_inference():
    model = _model(FUSE + "USE_TOKEN_LOSS", True, FUSE + "TOKEN_LOSS_WEIGHT", 0.25, pad_max=True)
    losses = _train_forward(model, backward=True)
    assert set(losses) == {"loss_reg", "loss_centerness", "loss_cls", "loss_token", "loss_dot_product_token"}
    assert _grad(model, "rpn.head.token_logits.") > 0
    torch.testing.assert_close(losses["loss_token"].detach(), 0.25 * _raw(model, "loss_token"))
    # without the dot-product head, detections are scored from the token logits (initial scores about 0.01)
    model = _model(FUSE + "USE_TOKEN_LOSS", True, FUSE + "USE_DOT_PRODUCT_TOKEN_LOSS", False, FUSE + "EARLY_FUSE_ON",
                   False, FUSE + "USE_FUSED_FEATURES_DOT_PRODUCT", False, "MODEL.ATSS.INFERENCE_TH", 0.001,
                   pad_max=True)
    prompt = {1: [1, 2, 3], 2: [5]}
    detections, outputs = _evaluate(model, prompt)
    with torch.no_grad():
        by_tokens = model.rpn.box_selector_test(outputs["box_regression"], outputs["centerness"],
                                                outputs["anchors"], box_cls=outputs["box_cls"],
                                                token_logits=outputs["token_logits"], label_to_tokens=prompt)
    assert sum(len(d) for d in detections) > 0
    _same_detections(detections, by_tokens)
    assert set(torch.cat([d.get_field("labels") for d in detections]).tolist()) <= {1, 2}


def test_shallow_contrastive_trains_its_projections():
    model = _model(FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS", True, FUSE + "SHALLOW_CONTRASTIVE_LOSS_WEIGHT", 0.5,
                   pad_max=True)
    losses = _train_forward(model, backward=True)
    assert set(losses) == {"loss_reg", "loss_centerness", "loss_cls", "loss_dot_product_token",
                           "loss_shallow_contrastive"}
    assert torch.isfinite(losses["loss_shallow_contrastive"]) and losses["loss_shallow_contrastive"] > 0
    for prefix in ("rpn.loss_evaluator.shallow_contrastive_projection_image.",
                   "rpn.loss_evaluator.shallow_contrastive_projection_text.", "rpn.loss_evaluator.shallow_log_scale",
                   "backbone.fpn."):
        assert _grad(model, prefix) > 0, prefix
    torch.testing.assert_close(losses["loss_shallow_contrastive"].detach(),
                               0.5 * _raw(model, "loss_shallow_contrastive"))


def test_the_builder_refuses_an_unimplemented_option_by_name():
    """The Python API path (config -> build_detection_model) runs the option audit as the tools do."""
    from glip.config.audit import RefusedOptionError

    cfg = tiny_glip_config()
    cfg.defrost()
    cfg.MODEL.MASK_ON = True
    with pytest.raises(RefusedOptionError, match=r"MODEL.MASK_ON = True"):
        build_detection_model(cfg)
