"""The fixed-size ATSS post-processing (glip/export/postprocess.py) against the reference goldens: eagerly, and
exported to ONNX and run by onnxruntime (its top-k, multi-label NMS as ONNX NonMaxSuppression, final cut)."""
import pytest
import torch
from helpers import load_golden

from glip.export.postprocess import FixedSizeATSSPostProcessor
from glip.modeling.head.atss_postprocessor import ATSSPostProcessor
from glip.modeling.head.box_coder import BoxCoder

IMAGES = ["astronaut", "chelsea"]
CAPTIONS = ["coco", "free"]


def golden_head(image, caption):
    """(head outputs, anchors, positive_map (L, T) float, unpadded (h, w), golden detections) at 320 px."""
    g = load_golden(f"infer_{image}_320.pt")["size320"]
    c = g["captions"][caption]
    head = c["head"]
    tokens = head["dot_product_logits"][0].shape[-1]
    label_to_tokens = c["positive_map_label_to_token"]
    positive_map = torch.zeros(max(label_to_tokens), tokens)
    for label, columns in label_to_tokens.items():
        positive_map[label - 1, columns] = 1.0 / len(columns)
    return head, g["anchors"], positive_map, tuple(g["image_size_hw"]), c["detections"]


def fixed_size_postprocessor():
    reference = ATSSPostProcessor(pre_nms_thresh=0.05, pre_nms_top_n=1000, nms_thresh=0.6, fpn_post_nms_top_n=100,
                                  min_size=0, num_classes=81, box_coder=BoxCoder(), score_agg="MEAN")
    return FixedSizeATSSPostProcessor.like(reference)


def assert_same_detections(boxes, scores, labels, ref, box_atol=1e-4, score_atol=1e-6):
    """Same (label, box, score) set as the golden (order-free), sorted by descending score."""
    boxes, scores, labels = (torch.as_tensor(t) for t in (boxes, scores, labels))
    assert len(scores) == len(ref["scores"]) and labels.dtype == torch.int64
    used = torch.zeros(len(scores), dtype=torch.bool)
    for box, score, label in zip(ref["boxes"], ref["scores"], ref["labels"]):
        close = (~used) & (labels == label) & ((boxes - box).abs().amax(1) <= box_atol)
        close &= (scores - score).abs() <= score_atol
        assert close.any(), f"golden detection {int(label)} {box.tolist()} {float(score)} not found"
        used[torch.nonzero(close)[0, 0]] = True
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("caption", CAPTIONS)
def test_eager_matches_reference_golden(image, caption):
    head, anchors, positive_map, hw, ref = golden_head(image, caption)
    with torch.no_grad():
        boxes, scores, labels = fixed_size_postprocessor()(head["box_regression"], head["centerness"], anchors,
                                                           head["dot_product_logits"], positive_map, hw)
    assert_same_detections(boxes, scores, labels, ref)


def test_refuses_what_it_does_not_implement():
    for overrides, name in [({"score_agg": "MAX"}, "SCORE_AGG"), ({"bbox_aug_enabled": True}, "MULTISCALE"),
                            ({"mdetr_style_aggregate_class_num": 5}, "MDETR")]:
        kwargs = dict(pre_nms_thresh=0.05, pre_nms_top_n=1000, nms_thresh=0.6, fpn_post_nms_top_n=100,
                      min_size=0, num_classes=81, box_coder=BoxCoder(), score_agg="MEAN")
        kwargs.update(overrides)
        with pytest.raises(NotImplementedError, match=name):
            FixedSizeATSSPostProcessor.like(ATSSPostProcessor(**kwargs))


class _Levels(torch.nn.Module):
    """The post-processor with the per-level lists as separate tensors (5 levels) and a fixed clip size."""

    def __init__(self, post, hw):
        super().__init__()
        self.post, self.hw = post, hw

    def forward(self, r0, r1, r2, r3, r4, c0, c1, c2, c3, c4, a0, a1, a2, a3, a4, d0, d1, d2, d3, d4,
                positive_map):
        return tuple(self.post([r0, r1, r2, r3, r4], [c0, c1, c2, c3, c4], [a0, a1, a2, a3, a4],
                               [d0, d1, d2, d3, d4], positive_map, self.hw))


@pytest.fixture(scope="module")
def onnx_postprocessor(tmp_path_factory):
    """The post-processor exported once (on chelsea/free's shapes; L and T dynamic), as an onnxruntime session."""
    pytest.importorskip("onnxruntime")
    from torch.export import Dim

    from glip.export.onnx import OPSET, translation_table

    head, anchors, positive_map, hw, _ = golden_head("chelsea", "free")
    module = _Levels(fixed_size_postprocessor(), hw)
    inputs = tuple(head["box_regression"]) + tuple(head["centerness"]) + tuple(anchors) + tuple(
        head["dot_product_logits"]) + (positive_map,)
    tokens, labels = Dim("T", min=2, max=256), Dim("L", min=1, max=256)
    dynamic = [None] * 15 + [{2: tokens}] * 5 + [{0: labels, 1: tokens}]
    path = str(tmp_path_factory.mktemp("onnx") / "post.onnx")
    program = torch.export.export(module, inputs, dynamic_shapes=tuple(dynamic), strict=False)
    torch.onnx.export(program, f=None, opset_version=OPSET, custom_translation_table=translation_table(),
                      output_names=["boxes", "scores", "labels"]).save(path)
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("caption", CAPTIONS)
def test_onnxruntime_matches_reference_golden(onnx_postprocessor, caption):
    head, anchors, positive_map, _, ref = golden_head("chelsea", caption)
    inputs = list(head["box_regression"]) + list(head["centerness"]) + list(anchors) + list(
        head["dot_product_logits"]) + [positive_map]
    feed = {arg.name: t.numpy() for arg, t in zip(onnx_postprocessor.get_inputs(), inputs)}
    boxes, scores, labels = onnx_postprocessor.run(None, feed)
    assert_same_detections(boxes, scores, labels, ref)
