"""USE_TOKEN_LOSS at inference: the token classifier's logits are scored as the reference's post-processor does,
i.e. exactly like dot-product logits laid out per location (checked on the post-processor's golden inputs)."""
import pytest
import torch

from glip.modeling.head.atss_postprocessor import ATSSPostProcessor
from glip.modeling.head.box_coder import BoxCoder
from glip.structures.bounding_box import BoxList
from helpers import load_golden


@pytest.mark.parametrize("score_agg", ["MEAN", "MAX"])
def test_token_logits_score_like_the_same_dot_product_logits(score_agg):
    g = load_golden("modules/atss_postprocessor.pt")
    p = g["params"]
    post = ATSSPostProcessor(p["pre_nms_thresh"], p["pre_nms_top_n"], p["nms_thresh"], p["fpn_post_nms_top_n"],
                             p["min_size"], 81, BoxCoder(), score_agg=score_agg)
    h, w = g["image_size_hw"]
    anchors = [[BoxList(a, (w, h)) for a in g["anchors_per_level"]]]
    box_cls = [torch.zeros(1, 80, r.shape[2], r.shape[3]) for r in g["box_regression"]]
    # (1, H*W, T) rows in (y, x) order -> the classifier's (1, T, H, W) map
    token_logits = [d.view(1, r.shape[2], r.shape[3], -1).permute(0, 3, 1, 2)
                    for d, r in zip(g["dot_product_logits"], g["box_regression"])]
    prompt = g["positive_map_label_to_token"]
    (by_tokens,) = post(g["box_regression"], g["centerness"], anchors, box_cls=box_cls, token_logits=token_logits,
                        label_to_tokens=prompt)
    (by_dot,) = post(g["box_regression"], g["centerness"], anchors, box_cls=box_cls,
                     dot_product_logits=g["dot_product_logits"], label_to_tokens=prompt)
    assert len(by_tokens) > 0
    for field in ("labels", "scores"):
        assert torch.equal(by_tokens.get_field(field), by_dot.get_field(field))
    assert torch.equal(by_tokens.bbox, by_dot.bbox)
