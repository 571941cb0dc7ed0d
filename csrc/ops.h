// Declarations of the compiled ops exposed as `glip._C` (CPU kernels always, CUDA kernels when built with them).
#pragma once
#include <torch/extension.h>

#include <tuple>

// GCC on x86-64 compiles a function marked GLIP_VECTOR_CLONES for AVX-512, for AVX2 + FMA and for the baseline and
// picks the widest the machine has when the library loads: a source build needs no -march flag and stays portable.
// Helpers they call must be always_inline (GCC does not inline across different targets otherwise).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define GLIP_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GLIP_VECTOR_CLONES
#endif

namespace glip {

using DeformGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Modulated deformable convolution (DCNv2). Shapes: input (B, C, H, W), offset (B, 2*dg*kh*kw, Ho, Wo) with
// (dy, dx) interleaved per kernel tap, mask (B, dg*kh*kw, Ho, Wo), weight (Cout, C/groups, kh, kw), bias (Cout)
// or an empty tensor. Returns (B, Cout, Ho, Wo).
at::Tensor deform_conv_forward_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                                   const at::Tensor& weight, const at::Tensor& bias, int64_t stride_h,
                                   int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                   int64_t groups, int64_t deformable_groups);

// Gradients (input, offset, mask, weight, bias) of the op above; grad_bias is empty when bias is empty.
DeformGrads deform_conv_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& weight,
                                     const at::Tensor& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                                     int64_t deformable_groups);

// Multi-label NMS: boxes (N, 4) xyxy, scores (N), labels (N). Returns kept indices (int64) in descending score
// order (stable for ties). Boxes suppress only boxes of the same label whose IoU (+1 widths) exceeds threshold.
at::Tensor ml_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels,
                      double threshold);

// One block step of an online softmax over the rows of `block` (rows, W), per column, all float32 and contiguous:
// block = exp(block - m') in place, m' = max(col_max, column max of block); col_sum = col_sum * exp(col_max - m') +
// column sums of the new block; col_max = m'. Returns exp(col_max_old - m') (W).
at::Tensor column_softmax_step_cpu(at::Tensor& block, at::Tensor& col_max, at::Tensor& col_sum);

#ifdef WITH_CUDA
at::Tensor deform_conv_forward_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                                    const at::Tensor& weight, const at::Tensor& bias, int64_t stride_h,
                                    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                    int64_t groups, int64_t deformable_groups);

DeformGrads deform_conv_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& weight,
                                      const at::Tensor& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                                      int64_t deformable_groups);

at::Tensor ml_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels,
                       double threshold);
#endif

// Shape checks shared by the CPU and CUDA paths; returns (Ho, Wo).
std::pair<int64_t, int64_t> deform_conv_check(const at::Tensor& input, const at::Tensor& offset,
                                              const at::Tensor& mask, const at::Tensor& weight,
                                              const at::Tensor& bias, int64_t stride_h, int64_t stride_w,
                                              int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                              int64_t groups, int64_t deformable_groups);

}  // namespace glip
