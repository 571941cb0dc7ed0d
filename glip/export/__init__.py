"""Exporting GLIP for deployment: one image's inference as a graph that runs without this package.

* `ExportableGLIP` (`glip.export.module`): the model as `(images, input_ids, attention_mask, positive_map) ->
  (boxes, scores, labels)`, plain tensors in and out, with the ATSS post-processing in a fixed-size
  formulation (`glip.export.postprocess`) that traces.
* `export_onnx` / `export_program` (`glip.export.onnx`): `torch.onnx.export` / `torch.export.export` of it
  with dynamic image size, caption length and label count.
* `OnnxGLIP` (`glip.export.runtime`): runs an exported file with onnxruntime from a caption, like the predictor.

The export-only code paths (the custom ops of `glip.export.ops`, the DCN op of `glip.layers.deform_conv`)
are taken only while `torch.compiler.is_exporting()`; what the PyTorch model computes is unchanged.
"""
