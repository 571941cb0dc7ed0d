"""VLDyHeadModule: head + anchors on call, weighted losses in `losses`, post-processing in `detect`."""
import torch
from torch import nn

from glip.modeling.head.rpn import VLDyHeadModule


class _Head(nn.Module):
    """Records what it is given; returns the fields the module passes on."""

    def forward(self, features, language, embedding):
        self.seen = (language, embedding)
        return {"box_regression": ["reg"], "centerness": ["ctr"], "box_cls": ["cls"], "dot_product_logits": ["dot"]}


class _Record(nn.Module):
    def __init__(self, result):
        super().__init__()
        self.result = result

    def forward(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        return self.result


def _language():
    return {"hidden": torch.ones(1, 3, 2), "embedded": torch.ones(1, 3, 2), "masks": torch.ones(1, 3)}


def test_call_runs_head_and_anchors_and_losses_are_weighted():
    raw = {"loss_reg": torch.tensor(2.0), "loss_cls": torch.tensor(3.0), "loss_dot_product_token": torch.tensor(5.0)}
    module = VLDyHeadModule(_Head(), _Record("anchors"), loss_evaluator=_Record(raw),
                            loss_weights={"loss_cls": 0.0, "loss_dot_product_token": 0.5})
    outputs = module("images", ["features"], _language())
    assert outputs["anchors"] == "anchors" and module.anchor_generator.args == ("images", ["features"])
    token_targets, masks = torch.ones(2, 3), torch.ones(1, 3)
    losses = module.losses(outputs, ["target"], token_targets, masks, captions=["a cat"])
    assert list(losses) == ["loss_reg", "loss_cls", "loss_dot_product_token"]
    assert [v.item() for v in losses.values()] == [2.0, 0.0, 2.5]
    evaluator = module.loss_evaluator
    assert evaluator.args == (outputs, ["target"], "anchors")
    assert evaluator.kwargs["token_targets"] is token_targets and evaluator.kwargs["text_masks"] is masks
    assert evaluator.kwargs["captions"] == ["a cat"] and evaluator.kwargs["mlm_labels"] is None


def test_detect_passes_the_prompt_map_to_the_post_processor():
    module = VLDyHeadModule(_Head(), _Record("anchors"), box_selector_test=_Record(["boxes"]))
    outputs = module("images", ["features"], _language())
    assert module.detect(outputs, {1: [1, 2]}) == ["boxes"]
    selector = module.box_selector_test
    assert selector.args == (["reg"], ["ctr"], "anchors")
    assert selector.kwargs == {"box_cls": ["cls"], "token_logits": None, "dot_product_logits": ["dot"],
                               "label_to_tokens": {1: [1, 2]}}


def test_detect_scores_the_token_classifier_without_a_dot_product_head():
    module = VLDyHeadModule(_Head(), _Record("anchors"), box_selector_test=_Record(["boxes"]))
    outputs = {"box_regression": ["reg"], "centerness": ["ctr"], "box_cls": ["cls"], "dot_product_logits": None,
               "token_logits": ["tok"], "anchors": "anchors"}
    module.detect(outputs, {1: [1]})
    kwargs = module.box_selector_test.kwargs
    assert kwargs["token_logits"] == ["tok"] and kwargs["dot_product_logits"] is None
    outputs["dot_product_logits"] = ["dot"]   # both: the dot-product scores win, as in the reference
    module.detect(outputs, {1: [1]})
    assert module.box_selector_test.kwargs["token_logits"] is None


def test_resizer_maps_the_embedded_text_for_the_head():
    resizer = nn.Linear(2, 4)
    module = VLDyHeadModule(_Head(), _Record("anchors"), resizer=resizer)
    language = _language()
    module("images", ["features"], language)
    seen, embedding = module.head.seen
    torch.testing.assert_close(embedding, resizer(language["embedded"]))
    assert torch.equal(seen["embedded"], language["embedded"])


def test_prompt_offset_is_added_to_a_copy_of_the_text_features():
    module = VLDyHeadModule(_Head(), _Record("anchors"), lang_dim=2, add_linear_layer=True)
    assert module.tunable_linear.weight.shape == (1000, 2) and module.tunable_linear.weight.abs().sum() == 0
    with torch.no_grad():
        module.tunable_linear.weight[:3] = torch.arange(6.0).view(3, 2)
    language = _language()
    module("images", ["features"], language)
    seen, embedding = module.head.seen
    expected = 1 + torch.arange(6.0).view(1, 3, 2)
    assert torch.equal(seen["embedded"], expected) and torch.equal(seen["hidden"], expected)
    assert torch.equal(embedding, expected)
    assert torch.equal(language["embedded"], torch.ones(1, 3, 2))   # the caller's dict is unchanged
