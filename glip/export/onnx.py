"""`torch.export` / ONNX export of `ExportableGLIP`, and the ONNX translations of GLIP's custom ops.

    program = export_program(model, example_inputs(...))       # torch.export.ExportedProgram
    export_onnx(program, "glip.onnx")                          # one file for any image size and caption

Dynamic axes: the image height and width (multiples of 32, at least 160 px after `torch.export`'s range
analysis), the caption length T (<= 256 with BERT) and the number of labels L. The custom ops become:

* `glip::modulated_deform_conv` -> ONNX `DeformConv` (opset >= 19): the same sampling rule and the same
  interleaved (dy, dx) offset layout as GLIP's kernel;
* `glip::ml_nms_mask` -> ONNX `NonMaxSuppression` on boxes whose x2, y2 are moved by +1, so that its IoU is the
  reference's legacy +1 IoU, with one score row per label (a box scores -1 in the other rows, below the score
  threshold); suppression is strict (`IoU > threshold`) in both.
"""
import json
import logging
import os
from typing import Dict, Optional, Sequence

import torch

from glip.export import ops  # noqa: F401  (registers glip::ml_nms_mask)
from glip.export.module import INPUT_NAMES, OUTPUT_NAMES, ExportableGLIP
from glip.layers import deform_conv  # noqa: F401  (registers glip::modulated_deform_conv)
from glip.utils.profiling import median_seconds

logger = logging.getLogger(__name__)

OPSET = 20
METADATA_KEY = "glip"
MAX_SIDE_32 = 64     # images up to 2048 px a side
MAX_TOKENS = 256     # BERT's MAX_QUERY_LEN
NMS_OFF_CLASS_SCORE = -1.0
NMS_SCORE_THRESHOLD = -0.5


def dynamic_shapes(max_side: int = 32 * MAX_SIDE_32, max_tokens: int = MAX_TOKENS) -> Dict[str, dict]:
    """`torch.export` dynamic shapes of the four inputs (image sides multiples of 32)."""
    from torch.export import Dim

    height, width = Dim("h32", min=2, max=max_side // 32), Dim("w32", min=2, max=max_side // 32)
    tokens, labels = Dim("T", min=2, max=max_tokens), Dim("L", min=1, max=max_tokens)
    return {"images": {2: 32 * height, 3: 32 * width}, "input_ids": {1: tokens}, "attention_mask": {1: tokens},
            "positive_map": {0: labels, 1: tokens}}


def export_program(model: torch.nn.Module, inputs: Sequence[torch.Tensor],
                   max_side: int = 32 * MAX_SIDE_32) -> "torch.export.ExportedProgram":
    """`torch.export.export` of `ExportableGLIP(model)` on example `inputs` (images, input_ids, attention_mask,
    positive_map; see `glip.export.runtime.prepare_inputs`) with dynamic sizes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    wrapper = model if isinstance(model, ExportableGLIP) else ExportableGLIP(model)
    # the math attention: the fused CPU kernel's output strides do not survive ONNX's decomposition of it
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        return torch.export.export(wrapper, tuple(inputs), dynamic_shapes=dynamic_shapes(max_side), strict=False)


def export_onnx(program: "torch.export.ExportedProgram", path: str, opset: int = OPSET,
                metadata: Optional[dict] = None, optimize: bool = True) -> str:
    """Write `program` (from `export_program`) as an ONNX file with the inputs/outputs of
    `glip.export.module` and `metadata` as JSON under the key "glip" (see `preprocessing_metadata`); weights
    beyond 2 GB go to a data file next to it. Returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx_program = torch.onnx.export(program, f=None, input_names=list(INPUT_NAMES),
                                     output_names=list(OUTPUT_NAMES), opset_version=opset,
                                     custom_translation_table=translation_table(opset), optimize=optimize)
    if metadata is not None:
        onnx_program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    onnx_program.save(path, external_data=_needs_external_data(onnx_program))
    return path


def preprocessing_metadata(cfg) -> dict:
    """What a deployment needs to prepare the inputs (`glip.export.runtime.OnnxGLIP` reads it)."""
    return {"pixel_mean": [float(v) for v in cfg.INPUT.PIXEL_MEAN],
            "pixel_std": [float(v) for v in cfg.INPUT.PIXEL_STD],
            "to_bgr255": bool(cfg.INPUT.TO_BGR255),
            "min_size": int(cfg.INPUT.MIN_SIZE_TEST), "max_size": int(cfg.INPUT.MAX_SIZE_TEST),
            "size_divisibility": int(cfg.DATALOADER.SIZE_DIVISIBILITY) or 32,
            "max_query_len": int(cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN),
            "tokenizer": str(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)}


def file_size(path: str) -> int:
    """Bytes of an exported model, its external data files included."""
    folder = os.path.dirname(os.path.abspath(path))
    data = [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(os.path.basename(path) + ".")]
    return os.path.getsize(path) + sum(os.path.getsize(f) for f in data if os.path.isfile(f))


def compare_with_pytorch(wrapper: ExportableGLIP, path: str, inputs: Sequence[torch.Tensor],
                         threads: Optional[int] = None) -> dict:
    """Run the file with onnxruntime (CPU) and `wrapper` with PyTorch on `inputs`; the largest differences.

    Returns `torch_detections`, `onnx_detections`, `box` / `score` (max abs differences, inf when the
    detection counts differ) and `labels_equal`.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs)})
    with torch.no_grad():
        torch_out = [t.numpy() for t in wrapper(*inputs)]
    same = onnx_out[0].shape == torch_out[0].shape
    return {"torch_detections": len(torch_out[1]), "onnx_detections": len(onnx_out[1]),
            "box": float(abs(onnx_out[0] - torch_out[0]).max(initial=0.0)) if same else float("inf"),
            "score": float(abs(onnx_out[1] - torch_out[1]).max(initial=0.0)) if same else float("inf"),
            "labels_equal": bool(same and (onnx_out[2] == torch_out[2]).all())}


def time_side_by_side(wrapper: ExportableGLIP, path: str, inputs: Sequence[torch.Tensor], runs: int = 3,
                      warmup: int = 1, threads: Optional[int] = None) -> dict:
    """Median seconds of one inference of `path` in onnxruntime (CPU) and of `wrapper` in PyTorch on the same
    `inputs` (`onnx_s`, `torch_s`, with `threads` intra-op threads in both), plus `compare_with_pytorch`'s figures."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        torch.set_num_threads(threads)
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs)}

    with torch.no_grad():
        result = {"onnx_s": median_seconds(lambda: session.run(None, feed), runs, warmup),
                  "torch_s": median_seconds(lambda: wrapper(*inputs), runs, warmup)}
    result.update(compare_with_pytorch(wrapper, path, inputs, threads))
    return result


def _needs_external_data(onnx_program) -> bool:
    size = sum(int(v.const_value.nbytes) for v in onnx_program.model.graph.initializers.values()
               if v.const_value is not None)
    return size >= 2 ** 31 - 2 ** 26


def translation_table(opset: int = OPSET) -> dict:
    """{custom op: onnxscript function} for `torch.onnx.export(custom_translation_table=...)`."""
    if opset < 19:
        raise ValueError(f"ONNX DeformConv needs opset >= 19, got {opset}")
    return {
        torch.ops.glip.modulated_deform_conv.default: _deform_conv_translation(opset),
        torch.ops.glip.ml_nms_mask.default: _ml_nms_mask_translation(opset),
    }


def _opset(opset: int):
    import onnxscript

    return getattr(onnxscript, f"opset{opset}")


def _deform_conv_translation(opset: int):
    op = _opset(opset)

    def deform_conv(input, offset, mask, weight, bias, stride: Sequence[int], padding: Sequence[int],
                    dilation: Sequence[int], groups: int, deformable_groups: int):
        pads = [int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])]
        return op.DeformConv(input, weight, offset, bias, mask, dilations=[int(d) for d in dilation],
                             group=int(groups), offset_group=int(deformable_groups), pads=pads,
                             strides=[int(s) for s in stride])

    return deform_conv


def _ml_nms_mask_translation(opset: int):
    op = _opset(opset)

    def ml_nms_mask(boxes, scores, labels, iou_threshold: float):
        legacy = op.Add(boxes, op.Constant(value_floats=[0.0, 0.0, 1.0, 1.0]))          # +1 widths
        zero = op.Constant(value_ints=[0])
        num_boxes = op.Shape(boxes, start=0, end=1)                                       # (1,)
        num_classes = op.Add(op.Max(op.ReduceMax(labels, keepdims=1), zero), op.Constant(value_ints=[1]))
        classes = op.Unsqueeze(op.Range(op.Constant(value_int=0), op.Squeeze(num_classes, zero),
                                        op.Constant(value_int=1)), op.Constant(value_ints=[1]))  # (C, 1)
        in_class = op.Equal(classes, op.Unsqueeze(labels, zero))                          # (C, N)
        per_class = op.Where(in_class, op.Unsqueeze(scores, zero),
                             op.Constant(value_float=NMS_OFF_CLASS_SCORE))
        selected = op.NonMaxSuppression(op.Unsqueeze(legacy, zero), op.Unsqueeze(per_class, zero),
                                        op.Max(num_boxes, op.Constant(value_ints=[1])),
                                        op.Constant(value_floats=[float(iou_threshold)]),
                                        op.Constant(value_floats=[NMS_SCORE_THRESHOLD]))  # (M, 3)
        kept = op.Squeeze(op.Gather(selected, op.Constant(value_ints=[2]), axis=1), op.Constant(value_ints=[1]))
        hits = op.Expand(op.Constant(value_int=1), op.Shape(kept))
        marks = op.ScatterElements(op.ConstantOfShape(num_boxes, value=_int64_zero()), kept, hits, axis=0)
        return op.Cast(marks, to=9)                                                       # BOOL

    return ml_nms_mask


def _int64_zero():
    import onnx

    return onnx.helper.make_tensor("zero", onnx.TensorProto.INT64, [1], [0])
