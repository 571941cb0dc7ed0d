// CUDA modulated deformable convolution (DCNv2): bilinear im2col kernels + cuBLAS GEMMs (through ATen), and the
// backward kernels (col2im into the input gradient, coordinate/mask gradients). Same semantics as the CPU path.
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"

namespace glip {
namespace {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(65535) * 8));
}

struct Geometry {
  int channels, height, width, out_h, out_w, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, dg;
};

// Bilinear value of `plane` (H, W) at (y, x), zero for corners outside the image.
template <typename T>
__device__ T bilinear(const T* plane, int height, int width, T y, T x) {
  const int y0 = static_cast<int>(floor(y)), x0 = static_cast<int>(floor(x));
  const int y1 = y0 + 1, x1 = x0 + 1;
  const T ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
  const T v00 = (y0 >= 0 && x0 >= 0) ? plane[y0 * width + x0] : T(0);
  const T v01 = (y0 >= 0 && x1 <= width - 1) ? plane[y0 * width + x1] : T(0);
  const T v10 = (y1 <= height - 1 && x0 >= 0) ? plane[y1 * width + x0] : T(0);
  const T v11 = (y1 <= height - 1 && x1 <= width - 1) ? plane[y1 * width + x1] : T(0);
  return hy * hx * v00 + hy * lx * v01 + ly * hx * v10 + ly * lx * v11;
}

template <typename T>
__device__ bool sample_location(const T* offset, const Geometry& g, int d, int k, int p, T& y, T& x) {
  const int np = g.out_h * g.out_w, taps = g.kh * g.kw;
  const int ho = p / g.out_w, wo = p % g.out_w;
  y = static_cast<T>(ho * g.stride_h - g.pad_h + (k / g.kw) * g.dil_h) + offset[(2 * (d * taps + k)) * np + p];
  x = static_cast<T>(wo * g.stride_w - g.pad_w + (k % g.kw) * g.dil_w) + offset[(2 * (d * taps + k) + 1) * np + p];
  return y > T(-1) && x > T(-1) && y < static_cast<T>(g.height) && x < static_cast<T>(g.width);
}

// cols (C*K, Ho*Wo) of one image.
template <typename T>
__global__ void im2col_kernel(int64_t n, const T* input, const T* offset, const T* mask, Geometry g, T* cols) {
  const int np = g.out_h * g.out_w, taps = g.kh * g.kw;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int p = static_cast<int>(i % np);
    const int k = static_cast<int>((i / np) % taps);
    const int c = static_cast<int>(i / (int64_t(np) * taps));
    const int d = c / (g.channels / g.dg);
    T y, x, val = T(0);
    if (sample_location(offset, g, d, k, p, y, x)) {
      val = bilinear(input + int64_t(c) * g.height * g.width, g.height, g.width, y, x);
    }
    cols[i] = val * mask[(d * taps + k) * np + p];
  }
}

// Scatters grad_cols (C*K, Ho*Wo) into grad_input (C, H, W) with the bilinear weights.
template <typename T>
__global__ void col2im_kernel(int64_t n, const T* grad_cols, const T* offset, const T* mask, Geometry g,
                              T* grad_input) {
  const int np = g.out_h * g.out_w, taps = g.kh * g.kw;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int p = static_cast<int>(i % np);
    const int k = static_cast<int>((i / np) % taps);
    const int c = static_cast<int>(i / (int64_t(np) * taps));
    const int d = c / (g.channels / g.dg);
    T y, x;
    if (!sample_location(offset, g, d, k, p, y, x)) continue;
    const T grad = grad_cols[i] * mask[(d * taps + k) * np + p];
    const int y0 = static_cast<int>(floor(y)), x0 = static_cast<int>(floor(x));
    const T ly = y - y0, lx = x - x0;
    T* plane = grad_input + int64_t(c) * g.height * g.width;
    for (int cy = 0; cy < 2; ++cy) {
      for (int cx = 0; cx < 2; ++cx) {
        const int yy = y0 + cy, xx = x0 + cx;
        if (yy < 0 || yy > g.height - 1 || xx < 0 || xx > g.width - 1) continue;
        const T w = (cy ? ly : 1 - ly) * (cx ? lx : 1 - lx);
        gpuAtomicAdd(plane + yy * g.width + xx, grad * w);
      }
    }
  }
}

// Offset and mask gradients: one thread per (deformable group, tap, position), summing over the group's channels.
template <typename T>
__global__ void coord_grad_kernel(int64_t n, const T* grad_cols, const T* input, const T* offset, const T* mask,
                                  Geometry g, T* grad_offset, T* grad_mask) {
  const int np = g.out_h * g.out_w, taps = g.kh * g.kw, per_dg = g.channels / g.dg;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int p = static_cast<int>(i % np);
    const int k = static_cast<int>((i / np) % taps);
    const int d = static_cast<int>(i / (int64_t(np) * taps));
    T y, x;
    T sum_y = T(0), sum_x = T(0), sum_m = T(0);
    const T m = mask[(d * taps + k) * np + p];
    if (sample_location(offset, g, d, k, p, y, x)) {
      const int y0 = static_cast<int>(floor(y)), x0 = static_cast<int>(floor(x));
      const int y1 = y0 + 1, x1 = x0 + 1;
      const T ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
      const bool i00 = y0 >= 0 && x0 >= 0, i01 = y0 >= 0 && x1 <= g.width - 1;
      const bool i10 = y1 <= g.height - 1 && x0 >= 0, i11 = y1 <= g.height - 1 && x1 <= g.width - 1;
      for (int c = d * per_dg; c < (d + 1) * per_dg; ++c) {
        const T* plane = input + int64_t(c) * g.height * g.width;
        const T v00 = i00 ? plane[y0 * g.width + x0] : T(0), v01 = i01 ? plane[y0 * g.width + x1] : T(0);
        const T v10 = i10 ? plane[y1 * g.width + x0] : T(0), v11 = i11 ? plane[y1 * g.width + x1] : T(0);
        const T gc = grad_cols[(int64_t(c) * taps + k) * np + p];
        sum_m += gc * (hy * hx * v00 + hy * lx * v01 + ly * hx * v10 + ly * lx * v11);
        sum_y += gc * (-hx * v00 - lx * v01 + hx * v10 + lx * v11);
        sum_x += gc * (-hy * v00 + hy * v01 - ly * v10 + ly * v11);
      }
    }
    grad_mask[(d * taps + k) * np + p] = sum_m;
    grad_offset[(2 * (d * taps + k)) * np + p] = sum_y * m;
    grad_offset[(2 * (d * taps + k) + 1) * np + p] = sum_x * m;
  }
}

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, std::pair<int64_t, int64_t> out_hw,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                       int64_t dil_w, int64_t deformable_groups) {
  return Geometry{static_cast<int>(input.size(1)), static_cast<int>(input.size(2)), static_cast<int>(input.size(3)),
                  static_cast<int>(out_hw.first),  static_cast<int>(out_hw.second), static_cast<int>(weight.size(2)),
                  static_cast<int>(weight.size(3)), static_cast<int>(stride_h),     static_cast<int>(stride_w),
                  static_cast<int>(pad_h),          static_cast<int>(pad_w),        static_cast<int>(dil_h),
                  static_cast<int>(dil_w),          static_cast<int>(deformable_groups)};
}

}  // namespace

at::Tensor deform_conv_forward_cuda(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& mask_,
                                    const at::Tensor& weight_, const at::Tensor& bias_, int64_t stride_h,
                                    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                    int64_t groups, int64_t deformable_groups) {
  const auto out_hw = deform_conv_check(input_, offset_, mask_, weight_, bias_, stride_h, stride_w, pad_h, pad_w,
                                        dil_h, dil_w, groups, deformable_groups);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  const Geometry g = make_geometry(input, weight, out_hw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   deformable_groups);
  const int64_t batch = input.size(0), out_channels = weight.size(0), taps = g.kh * g.kw;
  const int64_t np = int64_t(g.out_h) * g.out_w, cg_k = g.channels / groups * taps, og = out_channels / groups;
  at::Tensor output = at::empty({batch, out_channels, g.out_h, g.out_w}, input.options());
  at::Tensor cols = at::empty({groups, cg_k, np}, input.options());
  const at::Tensor w_groups = weight.view({groups, og, cg_k});
  const bool has_bias = bias_.defined() && bias_.numel() > 0;
  const at::Tensor bias = has_bias ? bias_.to(input.scalar_type()).contiguous().view({groups, og, 1}) : at::Tensor();
  const int64_t n = int64_t(g.channels) * taps * np;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t b = 0; b < batch; ++b) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_forward_cuda", [&] {
      im2col_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          n, input[b].data_ptr<scalar_t>(), offset[b].data_ptr<scalar_t>(), mask[b].data_ptr<scalar_t>(), g,
          cols.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor out_b = output[b].view({groups, og, np});
    if (has_bias) {
      at::baddbmm_out(out_b, bias.expand({groups, og, np}), w_groups, cols);
    } else {
      at::bmm_out(out_b, w_groups, cols);
    }
  }
  return output;
}

DeformGrads deform_conv_backward_cuda(const at::Tensor& grad_output_, const at::Tensor& input_,
                                      const at::Tensor& offset_, const at::Tensor& mask_, const at::Tensor& weight_,
                                      const at::Tensor& bias_, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                                      int64_t deformable_groups) {
  const auto out_hw = deform_conv_check(input_, offset_, mask_, weight_, bias_, stride_h, stride_w, pad_h, pad_w,
                                        dil_h, dil_w, groups, deformable_groups);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  const at::Tensor grad_output = grad_output_.to(input.scalar_type()).contiguous();
  const Geometry g = make_geometry(input, weight, out_hw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   deformable_groups);
  const int64_t batch = input.size(0), out_channels = weight.size(0), taps = g.kh * g.kw;
  const int64_t np = int64_t(g.out_h) * g.out_w, cg_k = g.channels / groups * taps, og = out_channels / groups;
  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_offset = at::zeros_like(offset);
  at::Tensor grad_mask = at::zeros_like(mask);
  at::Tensor grad_weight = at::zeros_like(weight);
  const bool has_bias = bias_.defined() && bias_.numel() > 0;
  at::Tensor grad_bias = has_bias ? grad_output.sum({0, 2, 3}).to(bias_.scalar_type()) : at::Tensor();
  at::Tensor cols = at::empty({groups, cg_k, np}, input.options());
  at::Tensor grad_cols = at::empty({groups, cg_k, np}, input.options());
  const at::Tensor w_t = weight.view({groups, og, cg_k}).transpose(1, 2);
  at::Tensor grad_w_groups = grad_weight.view({groups, og, cg_k});
  const int64_t n = int64_t(g.channels) * taps * np, n_coord = int64_t(g.dg) * taps * np;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor go_b = grad_output[b].view({groups, og, np});
    at::bmm_out(grad_cols, w_t, go_b);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_backward_cuda", [&] {
      const scalar_t* in_b = input[b].data_ptr<scalar_t>();
      const scalar_t* off_b = offset[b].data_ptr<scalar_t>();
      const scalar_t* mask_b = mask[b].data_ptr<scalar_t>();
      coord_grad_kernel<scalar_t><<<blocks_for(n_coord), kThreads, 0, stream>>>(
          n_coord, grad_cols.data_ptr<scalar_t>(), in_b, off_b, mask_b, g, grad_offset[b].data_ptr<scalar_t>(),
          grad_mask[b].data_ptr<scalar_t>());
      col2im_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          n, grad_cols.data_ptr<scalar_t>(), off_b, mask_b, g, grad_input[b].data_ptr<scalar_t>());
      im2col_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(n, in_b, off_b, mask_b, g,
                                                                        cols.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_w_groups.baddbmm_(go_b, cols.transpose(1, 2));
  }
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

}  // namespace glip
