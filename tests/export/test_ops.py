"""The export-time ops and their ONNX translations (glip/export/ops.py, glip/export/onnx.py): multi-label NMS as
a keep mask and as ONNX NonMaxSuppression (legacy +1 IoU, strict >), DCNv2 as ONNX DeformConv, each run by
onnxruntime against the eager PyTorch ops on inputs with ties, touching boxes and offsets that leave the map."""
import pytest
import torch

from glip.export import ops
from glip.export.onnx import OPSET, translation_table
from glip.layers.deform_conv import ModulatedDeformConv
from glip.layers.nms import ml_nms

ort = pytest.importorskip("onnxruntime")


def run_onnx(module, inputs, dynamic_shapes, path):
    program = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes, strict=False)
    torch.onnx.export(program, f=None, opset_version=OPSET, custom_translation_table=translation_table()).save(path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def nms_case(n, seed):
    """Boxes on an integer grid (exact legacy IoUs, touching edges), tied scores, 3 labels."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 40, (n, 2), generator=g).float()
    wh = torch.randint(0, 25, (n, 2), generator=g).float()
    scores = torch.randint(1, 12, (n,), generator=g).float() / 12
    labels = torch.randint(1, 4, (n,), generator=g)
    return torch.cat((xy, xy + wh), 1), scores, labels


def test_ml_nms_mask_is_ml_nms():
    boxes, scores, labels = nms_case(200, 0)
    keep = ops.ml_nms_mask(boxes, scores, labels, 0.6)
    assert keep.dtype == torch.bool and keep.shape == (200,)
    assert torch.equal(torch.nonzero(keep).flatten(), torch.sort(ml_nms(boxes, scores, labels, 0.6)).values)


class _Nms(torch.nn.Module):
    def forward(self, boxes, scores, labels):
        return ops.ml_nms_mask(boxes, scores, labels, 0.5)


def test_nms_translation_keeps_what_ml_nms_keeps(tmp_path):
    from torch.export import Dim

    n = Dim("N", min=2, max=10000)
    session = run_onnx(_Nms(), nms_case(50, 1), ({0: n}, {0: n}, {0: n}), tmp_path / "nms.onnx")
    for seed, count in [(2, 300), (3, 7), (4, 1000)]:
        boxes, scores, labels = nms_case(count, seed)
        (keep,) = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()})
        expected = torch.zeros(count, dtype=torch.bool)
        expected[ml_nms(boxes, scores, labels, 0.5)] = True
        assert torch.equal(torch.from_numpy(keep), expected), seed


@pytest.mark.parametrize("stride", [1, 2])
def test_deform_conv_translation_matches_eager(tmp_path, stride):
    from torch.export import Dim

    torch.manual_seed(stride)
    conv = ModulatedDeformConv(8, 6, 3, stride=stride, padding=1).eval()
    conv.bias.data.normal_()

    def inputs(h, w):
        out_h, out_w = (h - 1) // stride + 1, (w - 1) // stride + 1
        return (torch.randn(1, 8, h, w), 4 * torch.randn(1, 18, out_h, out_w), torch.rand(1, 9, out_h, out_w))

    h, w = Dim("h", min=4, max=512), Dim("w", min=4, max=512)
    if stride == 1:
        shapes = ({2: h, 3: w}, {2: h, 3: w}, {2: h, 3: w})
    else:
        h2, w2 = Dim("h2", min=2, max=256), Dim("w2", min=2, max=256)
        shapes = ({2: 2 * h2, 3: 2 * w2}, {2: h2, 3: w2}, {2: h2, 3: w2})
    session = run_onnx(conv, inputs(12, 16), shapes, tmp_path / "dcn.onnx")
    for size in [(12, 16), (20, 10)]:
        x, offset, mask = inputs(*size)
        names = [i.name for i in session.get_inputs()]
        (out,) = session.run(None, dict(zip(names, (x.numpy(), offset.numpy(), mask.numpy()))))
        with torch.no_grad():
            expected = conv(x, offset, mask)
        torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-5, rtol=1e-5)


def test_opset_below_19_is_refused():
    with pytest.raises(ValueError, match="DeformConv needs opset >= 19"):
        translation_table(18)
