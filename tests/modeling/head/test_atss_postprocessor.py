"""ATSSPostProcessor: reference goldens (random logits and the real GLIP-T head outputs at 320 px), the
positive-map aggregation against a literal per-class loop, and the top-n cut."""
import pytest
import torch
from yacs.config import CfgNode

from glip.modeling.head.atss_postprocessor import ATSSPostProcessor, PositiveMapAggregator, build_atss_postprocessor
from glip.modeling.head.box_coder import BoxCoder
from glip.structures.bounding_box import BoxList
from helpers import load_golden


def _postprocessor(**overrides):
    kwargs = dict(pre_nms_thresh=0.05, pre_nms_top_n=1000, nms_thresh=0.6, fpn_post_nms_top_n=100, min_size=0,
                  num_classes=81, box_coder=BoxCoder(), score_agg="MEAN")
    kwargs.update(overrides)
    return ATSSPostProcessor(**kwargs)


def _assert_same_detections(result, ref, box_atol=1e-2, score_atol=1e-4):
    """Same set of (label, box, score); order-free (match by label and box)."""
    boxes, scores, labels = result.bbox, result.get_field("scores"), result.get_field("labels")
    assert len(result) == len(ref["scores"])
    used = torch.zeros(len(result), dtype=torch.bool)
    for box, score, label in zip(ref["boxes"], ref["scores"], ref["labels"]):
        close = (~used) & (labels == label) & ((boxes - box).abs().max(1).values <= box_atol)
        close &= (scores - score).abs() <= score_atol
        assert close.any(), "reference detection {} {} {} not found".format(label, box.tolist(), score)
        used[close.nonzero()[0, 0]] = True
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)


@pytest.mark.parametrize("with_box_cls", [False, True])
def test_module_golden(with_box_cls):
    g = load_golden("modules/atss_postprocessor.pt")
    p = g["params"]
    post = _postprocessor(pre_nms_thresh=p["pre_nms_thresh"], pre_nms_top_n=p["pre_nms_top_n"],
                          nms_thresh=p["nms_thresh"], fpn_post_nms_top_n=p["fpn_post_nms_top_n"],
                          min_size=p["min_size"], score_agg=p["score_agg"])
    h, w = g["image_size_hw"]
    anchors = [[BoxList(a, (w, h)) for a in g["anchors_per_level"]]]
    box_cls = None
    if with_box_cls:
        box_cls = [torch.zeros(1, 80, r.shape[2], r.shape[3]) for r in g["box_regression"]]
    (result,) = post(g["box_regression"], g["centerness"], anchors, box_cls=box_cls,
                     dot_product_logits=g["dot_product_logits"], label_to_tokens=g["positive_map_label_to_token"])
    assert result.size == (w, h) and result.fields() == ["labels", "scores"]
    assert result.get_field("labels").dtype == torch.int64
    _assert_same_detections(result, g["detections"], box_atol=1e-4, score_atol=1e-6)


@pytest.mark.parametrize("image", ["astronaut", "chelsea"])
@pytest.mark.parametrize("caption", ["coco", "free"])
def test_glip_tiny_head_outputs_320(image, caption):
    g = load_golden("infer_{}_320.pt".format(image))["size320"]
    c = g["captions"][caption]
    h, w = g["image_size_hw"]
    anchors = [[BoxList(a, (w, h)) for a in g["anchors"]]]
    head = c["head"]
    (result,) = _postprocessor()(head["box_regression"], head["centerness"], anchors,
                                 dot_product_logits=head["dot_product_logits"],
                                 label_to_tokens=c["positive_map_label_to_token"])
    det = c["detections"]
    assert result.size == tuple(det["image_size_wh"])
    _assert_same_detections(result, det, box_atol=1e-4, score_atol=1e-6)
    orig = result.resize(tuple(det["orig_size_wh"]))
    _assert_same_detections(orig, dict(det, boxes=det["boxes_orig"]), box_atol=1e-3, score_atol=1e-6)


def _reference_loop(probs, label_to_tokens, num_classes, score_agg):
    """Literal per-class aggregation as the reference writes it."""
    scores = torch.zeros(probs.shape[0], probs.shape[1], num_classes)
    for label, tokens in label_to_tokens.items():
        picked = probs[:, :, torch.tensor(tokens, dtype=torch.int64)]
        scores[:, :, label - 1] = picked.mean(-1) if score_agg == "MEAN" else picked.max(-1)[0]
    return scores


@pytest.mark.parametrize("score_agg", ["MEAN", "MAX"])
def test_aggregation_equals_reference_loop(score_agg):
    label_to_tokens = load_golden("infer_chelsea_320.pt")["size320"]["captions"]["coco"]["positive_map_label_to_token"]
    probs = torch.rand(2, 700, 194, generator=torch.Generator().manual_seed(0))
    agg = PositiveMapAggregator(label_to_tokens, 194, 80, score_agg)
    expected = _reference_loop(probs, label_to_tokens, 80, score_agg)
    assert (agg(probs) - expected).abs().max() <= 1e-6


def test_aggregation_power_onehot_and_gaps():
    probs = torch.tensor([[[0.2, 0.8, 0.5, 0.1]]])
    pm = {1: [1, 2], 3: [3]}
    power = PositiveMapAggregator(pm, 4, 4, "POWER")(probs)
    assert power[0, 0].tolist() == pytest.approx([(0.8 * 0.5) ** 0.5, 0.0, 0.1, 0.0])
    onehot = PositiveMapAggregator(pm, 4, 4, "ONEHOT")(probs)
    assert onehot.shape == (1, 1, 2) and onehot[0, 0].tolist() == pytest.approx([0.2, 0.8])
    mean = PositiveMapAggregator(pm, 4, 4, "MEAN")(probs)
    assert mean[0, 0].tolist() == pytest.approx([0.65, 0.0, 0.1, 0.0])
    with pytest.raises(NotImplementedError):
        PositiveMapAggregator(pm, 4, 4, "SUM")


def _toy_inputs(logit_value, n_loc=4):
    """One level of 2x2 locations, far-apart anchors; every location has the same score."""
    anchors = torch.tensor([[0.0, 0, 9, 9], [30, 0, 39, 9], [0, 30, 9, 39], [30, 30, 39, 39]])[:n_loc]
    reg = torch.zeros(1, 4, 2, 2)
    ctr = torch.zeros(1, 1, 2, 2)
    logits = torch.full((1, 4, 3), logit_value)
    return [reg], [ctr], [[BoxList(anchors, (64, 64))]], [logits]


def test_threshold_topn_and_kthvalue_ties():
    reg, ctr, anchors, logits = _toy_inputs(0.0)  # token prob 0.5, centerness 0.5 -> score sqrt(0.25)
    pm = {1: [1], 2: [2]}
    (res,) = _postprocessor(fpn_post_nms_top_n=3)(reg, ctr, anchors, dot_product_logits=logits, label_to_tokens=pm)
    # 8 candidates with equal scores: kthvalue keeps every score >= the 3rd best -> all 8
    assert len(res) == 8 and res.get_field("scores").tolist() == pytest.approx([0.5] * 8)
    assert sorted(res.get_field("labels").tolist()) == [1] * 4 + [2] * 4
    (res,) = _postprocessor(pre_nms_top_n=2)(reg, ctr, anchors, dot_product_logits=logits, label_to_tokens=pm)
    assert len(res) == 2
    (res,) = _postprocessor(pre_nms_thresh=0.5)(reg, ctr, anchors, dot_product_logits=logits, label_to_tokens=pm)
    assert len(res) == 0  # 0.5 is not > 0.5


def test_boxes_are_clipped_and_aug_mode_skips_nms():
    reg, ctr, anchors, logits = _toy_inputs(2.0)
    anchors = [[BoxList(torch.tensor([[-5.0, -5, 9, 9], [0, 0, 9, 9], [60, 60, 70, 70], [1, 1, 9, 9]]), (64, 64))]]
    (res,) = _postprocessor()(reg, ctr, anchors, dot_product_logits=logits, label_to_tokens={1: [0]})
    assert res.bbox.min() >= 0 and res.bbox[:, 2].max() <= 63 and res.bbox[:, 3].max() <= 63
    (raw,) = _postprocessor(bbox_aug_enabled=True)(reg, ctr, anchors, dot_product_logits=logits,
                                                   label_to_tokens={1: [0]})
    assert len(raw) == 4 and len(res) < 4


def test_build_from_cfg():
    cfg = CfgNode({
        "MODEL": {"ATSS": {"INFERENCE_TH": 0.05, "INFERENCE_TH_TRAIN": 0.0, "PRE_NMS_TOP_N": 1000,
                           "PRE_NMS_TOP_N_TRAIN": 3000, "DETECTIONS_PER_IMG": 100, "POST_NMS_TOP_N_TRAIN": 1000,
                           "NMS_TH": 0.6, "NUM_CLASSES": 81},
                  "DYHEAD": {"SCORE_AGG": "MEAN"}},
        "TEST": {"USE_MULTISCALE": False, "MDETR_STYLE_AGGREGATE_CLASS_NUM": -1}})
    test = build_atss_postprocessor(cfg, BoxCoder())
    assert (test.pre_nms_thresh, test.pre_nms_top_n, test.fpn_post_nms_top_n) == (0.05, 1000, 100)
    train = build_atss_postprocessor(cfg, BoxCoder(), is_train=True)
    assert (train.pre_nms_thresh, train.pre_nms_top_n, train.fpn_post_nms_top_n) == (0.0, 3000, 1000)
