"""ATSS loss: reference goldens for targets / centerness / GIoU, and every loss term recomputed by hand."""
import os

import pytest
import torch
import torch.multiprocessing as mp
from helpers import load_golden

from glip.modeling.head import atss_loss as atss_loss_module
from glip.modeling.head.atss_loss import (
    ATSSLoss,
    centerness_targets,
    contrastive_align_loss,
    giou_loss,
    tokens_positive_map,
)
from glip.modeling.head.box_coder import BoxCoder
from glip.structures.bounding_box import BoxList

LEVEL_SHAPES = [(40, 64), (20, 32), (10, 16), (5, 8), (3, 4)]      # 320x512 input, strides 8..128


def _target(boxes, labels, size_wh):
    t = BoxList(boxes, tuple(size_wh))
    t.add_field("labels", labels)
    return t


def _module_case():
    g = load_golden("modules/atss_assignment.pt")
    h, w = g["image_size_hw"]
    return g, _target(g["gt_boxes"], g["gt_labels"], (w, h))


def _to_levels(flat, shapes=LEVEL_SHAPES):
    """(B, sum HW, K) -> per level (B, K, H, W) (row-major locations, as the head flattens them)."""
    out, start = [], 0
    for h, w in shapes:
        chunk = flat[:, start:start + h * w]
        out.append(chunk.reshape(flat.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous())
        start += h * w
    return out


def _giou_by_hand(p, t):
    """1 - GIoU of xyxy boxes, float64, from the definition (zero-area boxes allowed)."""
    p, t = p.double(), t.double()
    p = torch.stack([p[:, 0], p[:, 1], torch.max(p[:, 0], p[:, 2]), torch.max(p[:, 1], p[:, 3])], 1)
    iw = (torch.min(p[:, 2], t[:, 2]) - torch.max(p[:, 0], t[:, 0])).clamp(min=0)
    ih = (torch.min(p[:, 3], t[:, 3]) - torch.max(p[:, 1], t[:, 1])).clamp(min=0)
    inter = iw * ih
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    union = area(p) + area(t) - inter
    hull = (torch.max(p[:, 2], t[:, 2]) - torch.min(p[:, 0], t[:, 0])) * \
        (torch.max(p[:, 3], t[:, 3]) - torch.min(p[:, 1], t[:, 1]))
    return 1 - (inter / union - (hull - union) / hull)


def _binary_focal(logits, targets, alpha=0.25, gamma=2.0):
    x, t = logits.double(), targets.double()
    p = torch.sigmoid(x)
    return -alpha * t * (1 - p) ** gamma * torch.log(p) - (1 - alpha) * (1 - t) * p ** gamma * torch.log(1 - p)


# ----------------------------------------------------------------------------------------- reference goldens
def test_targets_centerness_and_giou_match_reference_golden():
    g, target = _module_case()
    coder = BoxCoder((10, 10, 5, 5))
    prepared = ATSSLoss(coder, topk=g["topk"]).prepare_targets([target], [g["anchors_per_level"]], g["positive_map"])
    assert torch.equal(prepared["labels"][0], g["cls_labels"])
    torch.testing.assert_close(prepared["reg_targets"][0], g["reg_targets"], rtol=0, atol=1e-5)

    pos = g["positive_anchor_indices"]
    token_labels = prepared["token_labels"][0]
    assert torch.equal(token_labels[pos], g["token_labels_of_positives"])
    negatives = token_labels[prepared["labels"][0] == 0]
    assert negatives[:, :255].sum() == 0 and (negatives[:, 255] == 1).all()

    anchors = torch.cat(g["anchors_per_level"])[pos]
    ctr = centerness_targets(prepared["reg_targets"][0][pos], anchors, coder)
    torch.testing.assert_close(ctr, g["centerness_targets_for_positives"], rtol=0, atol=1e-5)

    pred_boxes = coder.decode(g["giou_pred_deltas"], anchors)
    gt_boxes = coder.decode(prepared["reg_targets"][0][pos], anchors)
    torch.testing.assert_close(giou_loss(pred_boxes, gt_boxes, weight=ctr), g["giou_loss_weighted_sum"],
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(giou_loss(pred_boxes, gt_boxes), g["giou_loss_unweighted_sum"], rtol=1e-5, atol=1e-5)


def test_training_batch_targets_match_reference_golden():
    """Labels of the reference's 2-image training batch; token targets are the matched boxes' positive-map rows."""
    train = load_golden("train_losses.pt")
    anchors = load_golden("infer_chelsea_320.pt")["size320"]["anchors"]
    targets = [_target(t["boxes"], t["labels"], t["size_wh"]) for t in train["targets"]]
    prepared = ATSSLoss(BoxCoder()).prepare_targets(targets, [anchors, anchors], train["positive_map"])
    for i, sample in enumerate(train["samples"]):
        labels = prepared["labels"][i]
        assert torch.equal(labels, train["assignment"]["cls_labels_per_image"][i])
        pos = train["assignment"]["positive_anchor_indices_per_image"][i]
        matched = prepared["matched_idxs"][i][pos]
        assert torch.equal(prepared["token_labels"][i][pos], sample["positive_map"][matched])


# ----------------------------------------------------------------------------------------- losses by hand
def _predictions(batch, num_anchors, seed=0, num_classes=80, tokens=256):
    g = torch.Generator().manual_seed(seed)
    return {
        "box_regression": torch.randn(batch, num_anchors, 4, generator=g) * 0.5,
        "centerness": torch.randn(batch, num_anchors, 1, generator=g),
        "box_cls": torch.randn(batch, num_anchors, num_classes, generator=g) - 2.0,
        "dot": torch.randn(batch, num_anchors, tokens, generator=g) - 2.0,
    }


def _call(loss, preds, targets, anchors, token_targets, text_masks, **more_outputs):
    outputs = {"box_regression": _to_levels(preds["box_regression"]), "centerness": _to_levels(preds["centerness"]),
               "box_cls": _to_levels(preds["box_cls"]),
               "dot_product_logits": list(torch.split(preds["dot"], [h * w for h, w in LEVEL_SHAPES], dim=1)),
               **more_outputs}
    return loss(outputs, targets, anchors, token_targets=token_targets, text_masks=text_masks)


def test_every_loss_term_by_hand():
    g, target = _module_case()
    coder = BoxCoder()
    anchors = torch.cat(g["anchors_per_level"])
    preds = _predictions(1, anchors.shape[0])
    text_mask = torch.zeros(1, 256, dtype=torch.long)
    text_mask[0, :6] = 1
    text_mask[0, 255] = 1                     # unmasked "no object" slot: negatives' target 1 counts there
    losses = _call(ATSSLoss(coder), preds, [target], [g["anchors_per_level"]], g["positive_map"], text_mask)

    pos = g["positive_anchor_indices"]
    num_pos = pos.numel()
    labels = g["cls_labels"]
    token_targets = torch.zeros(anchors.shape[0], 256)
    token_targets[:, 255] = 1
    token_targets[pos] = g["token_labels_of_positives"]
    keep = text_mask[0].bool()
    expected_dot = _binary_focal(preds["dot"][0][:, keep], token_targets[:, keep]).sum() / num_pos

    onehot = torch.zeros(anchors.shape[0], 80)
    onehot[labels > 0, labels[labels > 0] - 1] = 1
    expected_cls = _binary_focal(preds["box_cls"][0], onehot).sum() / num_pos

    ctr = g["centerness_targets_for_positives"].double()
    pred_boxes = coder.decode(preds["box_regression"][0][pos], anchors[pos])
    gt_boxes = coder.decode(g["reg_targets"][pos], anchors[pos])
    expected_reg = 2.0 * (_giou_by_hand(pred_boxes, gt_boxes) * ctr).sum() / ctr.sum()
    x = preds["centerness"][0, pos, 0].double()
    expected_ctr = -(ctr * torch.log(torch.sigmoid(x)) + (1 - ctr) * torch.log(1 - torch.sigmoid(x))).sum() / num_pos

    assert set(losses) == {"loss_cls", "loss_reg", "loss_centerness", "loss_dot_product_token"}
    for name, expected in [("loss_dot_product_token", expected_dot), ("loss_cls", expected_cls),
                           ("loss_reg", expected_reg), ("loss_centerness", expected_ctr)]:
        assert losses[name].dtype == torch.float32 and losses[name].dim() == 0
        torch.testing.assert_close(losses[name].double(), expected, rtol=1e-5, atol=1e-6, msg=name)


def test_shorter_max_query_len_uses_the_first_columns_of_the_256_wide_positive_map():
    """MAX_QUERY_LEN 64: logits and text mask are 64 wide, positive maps stay 256 wide (as the datasets build
    them); the token loss is the focal loss over the first 64 columns."""
    g, target = _module_case()
    anchors = torch.cat(g["anchors_per_level"])
    preds = _predictions(1, anchors.shape[0], tokens=64)
    text_mask = torch.zeros(1, 64, dtype=torch.long)
    text_mask[0, :6] = 1
    losses = _call(ATSSLoss(BoxCoder()), preds, [target], [g["anchors_per_level"]], g["positive_map"], text_mask)

    pos = g["positive_anchor_indices"]
    token_targets = torch.zeros(anchors.shape[0], 64)
    token_targets[pos] = g["token_labels_of_positives"][:, :64]
    assert token_targets[:, :6].sum() > 0
    expected = _binary_focal(preds["dot"][0][:, :6], token_targets[:, :6]).sum() / pos.numel()
    torch.testing.assert_close(losses["loss_dot_product_token"].double(), expected, rtol=1e-5, atol=1e-6)


def test_exact_regression_gives_zero_giou_loss():
    g, target = _module_case()
    anchors = torch.cat(g["anchors_per_level"])
    preds = _predictions(1, anchors.shape[0])
    preds["box_regression"] = g["reg_targets"][None].clone()
    losses = _call(ATSSLoss(BoxCoder()), preds, [target], [g["anchors_per_level"]], g["positive_map"],
                   torch.ones(1, 256))
    assert losses["loss_reg"].abs().item() < 1e-5


def test_batch_normalises_by_positives_of_all_images():
    """Two images: each term equals the per-image sums over the batch total of positives (ordering check)."""
    g, target = _module_case()
    levels = g["anchors_per_level"]
    n = torch.cat(levels).shape[0]
    second = _target(g["gt_boxes"][:2] + 7.0, torch.tensor([5, 9]), target.size)
    pmap2 = torch.zeros(2, 256)
    pmap2[0, 3] = pmap2[1, 4] = 1
    positive_map = torch.cat([g["positive_map"], pmap2])
    masks = torch.zeros(2, 256)
    masks[:, :8] = 1
    preds = _predictions(2, n, seed=3)
    loss = ATSSLoss(BoxCoder())
    both = _call(loss, preds, [target, second], [levels, levels], positive_map, masks)

    singles, num_pos = [], []
    for i, (t, pm) in enumerate([(target, g["positive_map"]), (second, pmap2)]):
        one = {k: v[i:i + 1] for k, v in preds.items()}
        singles.append(_call(loss, one, [t], [levels], pm, masks[i:i + 1]))
        num_pos.append((loss.prepare_targets([t], [levels])["labels"][0] > 0).sum().item())
    total = sum(num_pos)
    for name in ("loss_dot_product_token", "loss_cls", "loss_centerness"):
        expected = sum(s[name] * p for s, p in zip(singles, num_pos)) / total
        torch.testing.assert_close(both[name], expected, rtol=1e-5, atol=1e-6, msg=name)


def test_no_positives_gives_zero_box_losses_and_backpropagates():
    g, _ = _module_case()
    levels = g["anchors_per_level"]
    n = torch.cat(levels).shape[0]
    empty = _target(torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64), (481, 320))
    preds = {k: v.requires_grad_() for k, v in _predictions(1, n).items()}
    masks = torch.zeros(1, 256)
    masks[0, :4] = 1
    losses = _call(ATSSLoss(BoxCoder()), preds, [empty], [levels], torch.zeros((0, 256)), masks)
    assert losses["loss_reg"].item() == 0 and losses["loss_centerness"].item() == 0
    expected = _binary_focal(preds["dot"][0, :, :4].detach(), torch.zeros(n, 4)).sum()     # / max(0, 1)
    torch.testing.assert_close(losses["loss_dot_product_token"].double(), expected, rtol=1e-5, atol=1e-6)
    sum(losses.values()).backward()
    assert preds["box_regression"].grad.abs().sum() == 0 and preds["dot"].grad.abs().sum() > 0


def test_low_precision_inputs_are_computed_in_float32():
    g, target = _module_case()
    n = torch.cat(g["anchors_per_level"]).shape[0]
    preds = {k: v.bfloat16() for k, v in _predictions(1, n).items()}
    losses = _call(ATSSLoss(BoxCoder()), preds, [target], [g["anchors_per_level"]], g["positive_map"],
                   torch.ones(1, 256))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_normalisers_use_the_global_positive_count(monkeypatch):
    """With a (simulated) second process holding the same batch, every loss is unchanged."""
    g, target = _module_case()
    n = torch.cat(g["anchors_per_level"]).shape[0]
    args = (_predictions(1, n), [target], [g["anchors_per_level"]], g["positive_map"], torch.ones(1, 256))
    single = _call(ATSSLoss(BoxCoder()), *args)
    monkeypatch.setattr(atss_loss_module, "get_world_size", lambda: 2)
    monkeypatch.setattr(atss_loss_module, "reduce_sum", lambda t: t * 2)
    doubled = _call(ATSSLoss(BoxCoder()), *args)
    for name in single:
        torch.testing.assert_close(doubled[name], single[name], rtol=1e-6, atol=1e-7)


def _distributed_worker(rank, world, init_file, result_file):
    torch.distributed.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
    g, target = _module_case()
    keep = [rank]                                                 # rank r keeps gt box r only
    t = _target(g["gt_boxes"][keep], g["gt_labels"][keep], target.size)
    n = torch.cat(g["anchors_per_level"]).shape[0]
    losses = _call(ATSSLoss(BoxCoder()), _predictions(1, n, seed=rank), [t], [g["anchors_per_level"]],
                   g["positive_map"][keep], torch.ones(1, 256))
    torch.save({k: v.detach() for k, v in losses.items()}, "{}.{}".format(result_file, rank))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_share_the_normaliser(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2)
    g, target = _module_case()
    n = torch.cat(g["anchors_per_level"]).shape[0]
    loss = ATSSLoss(BoxCoder())
    num_pos, raw = [], []
    for rank in range(2):
        t = _target(g["gt_boxes"][[rank]], g["gt_labels"][[rank]], target.size)
        num_pos.append((loss.prepare_targets([t], [g["anchors_per_level"]])["labels"][0] > 0).sum().item())
        raw.append(_call(loss, _predictions(1, n, seed=rank), [t], [g["anchors_per_level"]],
                         g["positive_map"][[rank]], torch.ones(1, 256)))
    average = sum(num_pos) / 2.0
    for rank in range(2):
        got = torch.load("{}.{}".format(tmp_path / "out", rank))
        expected = raw[rank]["loss_dot_product_token"] * num_pos[rank] / average
        torch.testing.assert_close(got["loss_dot_product_token"], expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- contrastive align
def test_contrastive_align_loss_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])
    pmap = torch.tensor([[[True, True, False], [False, False, False]]])
    # box 0 -> tokens {0, 1}: -(1 + 2) / 2 + logsumexp(1, 2, 0.5); box 1 has no positive token
    box_term = -1.5 + torch.logsumexp(torch.tensor([1.0, 2.0, 0.5]), 0)
    # tokens 0 and 1 -> box 0 over the two boxes
    tok_term = (-1.0 + torch.logsumexp(torch.tensor([1.0, 0.0]), 0)) + \
        (-2.0 + torch.logsumexp(torch.tensor([2.0, -1.0]), 0))
    torch.testing.assert_close(contrastive_align_loss(logits, pmap), (box_term + tok_term) / 2, rtol=1e-5, atol=1e-5)


def test_tokens_positive_map_finds_phrase_tokens():
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(os.path.join(os.path.dirname(atss_loss_module.__file__), "..", "..",
                                                         "assets", "bert-base-uncased"))
    tokenized = tok(["a cat sitting on a wooden table"], padding="longest", return_tensors="pt")
    m = tokens_positive_map(tokenized, 0, [[(0, 5)], [(17, 31)]], 256)
    assert m[0].nonzero().squeeze(1).tolist() == [1, 2]
    assert m[1].nonzero().squeeze(1).tolist() == [5, 6, 7]


def test_contrastive_align_term_is_reported():
    g, target = _module_case()
    n = torch.cat(g["anchors_per_level"]).shape[0]
    preds = _predictions(1, n)
    contrastive = torch.randn(1, n, 256, generator=torch.Generator().manual_seed(1))
    loss = ATSSLoss(BoxCoder(), use_dot_product_token_loss=False, use_contrastive_align_loss=True)
    losses = _call(loss, preds, [target], [g["anchors_per_level"]], g["positive_map"], torch.ones(1, 256),
                   contrastive_logits=list(torch.split(contrastive, [h * w for h, w in LEVEL_SHAPES], dim=1)))
    assert "loss_dot_product_token" not in losses
    pos = g["positive_anchor_indices"]
    pmap = torch.zeros(1, n, 256, dtype=torch.bool)
    pmap[0, pos] = g["token_labels_of_positives"].bool()
    expected = contrastive_align_loss(contrastive, pmap) / pos.numel()
    torch.testing.assert_close(losses["loss_contrastive_align"], expected, rtol=1e-5, atol=1e-5)


def test_build_from_reference_config():
    from helpers import REFERENCE

    from glip.config import cfg
    from glip.modeling.head.atss_loss import build_atss_loss

    c = cfg.clone()
    c.merge_from_file(str(REFERENCE / "config_glip_tiny_test.yaml"))
    loss = build_atss_loss(c, BoxCoder())
    assert (loss.topk, loss.num_anchors_per_location, loss.reg_loss_weight) == (9, 1, 2.0)
    assert loss.use_dot_product_token_loss and not loss.use_token_loss and not loss.use_contrastive_align_loss
    assert (loss.token_loss_func.alpha, loss.token_loss_func.gamma) == (0.25, 2.0)
    assert (loss.cls_loss_func.alpha, loss.cls_loss_func.gamma) == (0.25, 2.0)


@pytest.mark.slow
def test_full_model_raw_losses_match_reference():
    """GLIP-T train-mode forward on the 2-image golden batch: the loss evaluator's raw outputs."""
    from helpers.glip_model import golden_glip_tiny
    from helpers.stochastic import no_dropout

    from glip.structures.image_list import to_image_list

    train = load_golden("train_losses.pt")
    model = golden_glip_tiny()
    captured = {}
    handle = model.rpn.loss_evaluator.register_forward_hook(
        lambda module, args, out: captured.update({k: v.detach() for k, v in out.items()}))
    mean = torch.tensor([103.530, 116.280, 123.675]).view(3, 1, 1)
    std = torch.tensor([57.375, 57.120, 58.395]).view(3, 1, 1)
    images = [((s["resized_rgb_uint8"].permute(2, 0, 1).float() / 255.0)[[2, 1, 0]] * 255 - mean) / std
              for s in train["samples"]]
    targets = [_target(t["boxes"], t["labels"], t["size_wh"]) for t in train["targets"]]
    try:
        model.train()
        with torch.no_grad(), no_dropout(model, drop_path=True):
            model(to_image_list(images, size_divisible=32), targets=targets, captions=train["captions"],
                  positive_map=train["positive_map"])
    finally:
        handle.remove()
        model.eval()
    raw = train["raw_losses"]
    for ours, theirs in [("loss_cls", "cls_loss_unweighted"), ("loss_reg", "reg_loss_x_REG_LOSS_WEIGHT"),
                         ("loss_centerness", "centerness_loss"),
                         ("loss_dot_product_token", "dot_product_token_loss_unweighted")]:
        torch.testing.assert_close(captured[ours], raw[theirs], rtol=1e-4, atol=0, msg=ours)


def test_mlm_term_is_the_cross_entropy_of_the_labelled_tokens():
    g, target = _module_case()
    n = torch.cat(g["anchors_per_level"]).shape[0]
    logits = torch.randn(1, 4, 7, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([[3, -100, 0, -100]])
    loss = ATSSLoss(BoxCoder())
    without = _call(loss, _predictions(1, n), [target], [g["anchors_per_level"]], g["positive_map"],
                    torch.ones(1, 256), mlm_logits=logits)
    assert "mlm_loss" not in without
    outputs = {"box_regression": _to_levels(_predictions(1, n)["box_regression"]),
               "centerness": _to_levels(_predictions(1, n)["centerness"]), "mlm_logits": logits}
    losses = loss(outputs, [target], [g["anchors_per_level"]], token_targets=g["positive_map"], mlm_labels=labels)
    expected = -(torch.log_softmax(logits[0, 0], -1)[3] + torch.log_softmax(logits[0, 2], -1)[0]) / 2
    assert list(losses)[-1] == "mlm_loss"
    torch.testing.assert_close(losses["mlm_loss"], expected, rtol=1e-5, atol=1e-6)
