// Python bindings of `glip._C`: device dispatch for the deformable convolution and multi-label NMS kernels, and the
// CPU column softmax step of the fusion attention's inference.
#include "ops.h"

namespace glip {

std::pair<int64_t, int64_t> deform_conv_check(const at::Tensor& input, const at::Tensor& offset,
                                              const at::Tensor& mask, const at::Tensor& weight,
                                              const at::Tensor& bias, int64_t stride_h, int64_t stride_w,
                                              int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                              int64_t groups, int64_t deformable_groups) {
  TORCH_CHECK(input.dim() == 4 && offset.dim() == 4 && mask.dim() == 4 && weight.dim() == 4,
              "deform_conv: input, offset, mask and weight must be 4-D");
  TORCH_CHECK(stride_h > 0 && stride_w > 0 && dil_h > 0 && dil_w > 0 && pad_h >= 0 && pad_w >= 0,
              "deform_conv: invalid stride/padding/dilation");
  TORCH_CHECK(groups > 0 && deformable_groups > 0, "deform_conv: groups must be positive");
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t out_channels = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  TORCH_CHECK(channels % groups == 0 && out_channels % groups == 0, "deform_conv: channels not divisible by groups");
  TORCH_CHECK(channels % deformable_groups == 0, "deform_conv: channels not divisible by deformable_groups");
  TORCH_CHECK(weight.size(1) * groups == channels, "deform_conv: weight has ", weight.size(1),
              " input channels per group, expected ", channels / groups);
  const int64_t out_h = (height + 2 * pad_h - (dil_h * (kh - 1) + 1)) / stride_h + 1;
  const int64_t out_w = (width + 2 * pad_w - (dil_w * (kw - 1) + 1)) / stride_w + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0, "deform_conv: output would be empty");
  const int64_t taps = kh * kw;
  TORCH_CHECK(offset.size(0) == batch && offset.size(1) == 2 * deformable_groups * taps && offset.size(2) == out_h &&
                  offset.size(3) == out_w,
              "deform_conv: offset must be (", batch, ", ", 2 * deformable_groups * taps, ", ", out_h, ", ", out_w,
              "), got ", offset.sizes());
  TORCH_CHECK(mask.size(0) == batch && mask.size(1) == deformable_groups * taps && mask.size(2) == out_h &&
                  mask.size(3) == out_w,
              "deform_conv: mask must be (", batch, ", ", deformable_groups * taps, ", ", out_h, ", ", out_w,
              "), got ", mask.sizes());
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || bias.numel() == out_channels, "deform_conv: bad bias size");
  TORCH_CHECK(offset.scalar_type() == input.scalar_type() && mask.scalar_type() == input.scalar_type() &&
                  weight.scalar_type() == input.scalar_type(),
              "deform_conv: input, offset, mask and weight must share one dtype");
  TORCH_CHECK(offset.device() == input.device() && mask.device() == input.device() &&
                  weight.device() == input.device(),
              "deform_conv: all tensors must be on one device");
  return {out_h, out_w};
}

namespace {

at::Tensor deform_conv_forward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                               const at::Tensor& weight, const at::Tensor& bias, int64_t stride_h, int64_t stride_w,
                               int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                               int64_t deformable_groups) {
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return deform_conv_forward_cuda(input, offset, mask, weight, bias, stride_h, stride_w, pad_h, pad_w, dil_h,
                                    dil_w, groups, deformable_groups);
#else
    TORCH_CHECK(false, "glip._C was built without CUDA support");
#endif
  }
  return deform_conv_forward_cpu(input, offset, mask, weight, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                 groups, deformable_groups);
}

DeformGrads deform_conv_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
                                 const at::Tensor& mask, const at::Tensor& weight, const at::Tensor& bias,
                                 int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                 int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return deform_conv_backward_cuda(grad_output, input, offset, mask, weight, bias, stride_h, stride_w, pad_h,
                                     pad_w, dil_h, dil_w, groups, deformable_groups);
#else
    TORCH_CHECK(false, "glip._C was built without CUDA support");
#endif
  }
  return deform_conv_backward_cpu(grad_output, input, offset, mask, weight, bias, stride_h, stride_w, pad_h, pad_w,
                                  dil_h, dil_w, groups, deformable_groups);
}

at::Tensor ml_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels, double threshold) {
  if (boxes.is_cuda()) {
#ifdef WITH_CUDA
    return ml_nms_cuda(boxes, scores, labels, threshold);
#else
    TORCH_CHECK(false, "glip._C was built without CUDA support");
#endif
  }
  return ml_nms_cpu(boxes, scores, labels, threshold);
}

at::Tensor column_softmax_step(at::Tensor block, at::Tensor col_max, at::Tensor col_sum) {
  TORCH_CHECK(!block.is_cuda() && !col_max.is_cuda() && !col_sum.is_cuda(), "column_softmax_step runs on the CPU");
  return column_softmax_step_cpu(block, col_max, col_sum);
}

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace glip

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "GLIP compiled ops: modulated deformable convolution (DCNv2), multi-label NMS, column softmax step";
  m.def("deform_conv_forward", &glip::deform_conv_forward, "DCNv2 forward",
        py::arg("input"), py::arg("offset"), py::arg("mask"), py::arg("weight"), py::arg("bias"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("dil_h"),
        py::arg("dil_w"), py::arg("groups"), py::arg("deformable_groups"));
  m.def("deform_conv_backward", &glip::deform_conv_backward,
        "DCNv2 backward -> (grad_input, grad_offset, grad_mask, grad_weight, grad_bias)",
        py::arg("grad_output"), py::arg("input"), py::arg("offset"), py::arg("mask"), py::arg("weight"),
        py::arg("bias"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
        py::arg("dil_h"), py::arg("dil_w"), py::arg("groups"), py::arg("deformable_groups"));
  m.def("ml_nms", &glip::ml_nms, "multi-label NMS -> kept indices (descending score)", py::arg("boxes"),
        py::arg("scores"), py::arg("labels"), py::arg("threshold"));
  m.def("column_softmax_step", &glip::column_softmax_step,
        "online column softmax step, in place: block -> exp(block - new max), col_max, col_sum updated; returns "
        "the rescale factor exp(old max - new max)", py::arg("block"), py::arg("col_max"), py::arg("col_sum"));
  m.def("with_cuda", &glip::with_cuda, "whether the CUDA kernels were compiled in");
}
