// CPU modulated deformable convolution (DCNv2) as bilinear im2col + GEMM, with a fused backward pass.
//
// Semantics follow the reference CUDA kernel: offsets are (dy, dx) interleaved per kernel tap k = i * kw + j,
// a sampling point contributes only when -1 < y < H and -1 < x < W, corners outside the image read zero, and the
// sampled value is multiplied by the mask. Sampling locations depend on (deformable group, tap, output position)
// but not on the channel, so they are tabulated once per image and reused by every channel of the group.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "../ops.h"

namespace glip {
namespace {

struct ConvGeometry {
  int64_t channels, height, width, out_h, out_w, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t taps() const { return kh * kw; }
  int64_t plane() const { return height * width; }
  int64_t out_plane() const { return out_h * out_w; }
};

// Bilinear sampling of one (deformable group, output position p, tap k), stored at entry p * K + k: the flat
// pixel indices of the four corners (0 for corners outside the image), their weights (0 outside) and, for the
// backward pass, the derivatives of the weights with respect to the sampling y and x.
template <typename T>
struct Sample {
  int32_t idx[4];
  T w[4];
  T dy[4];
  T dx[4];
};

template <typename T>
void build_samples(const T* offset, const ConvGeometry& g, std::vector<Sample<T>>& samples) {
  const int64_t np = g.out_plane(), taps = g.taps();
  samples.resize(np * taps);
  at::parallel_for(0, np, 64, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t ho = p / g.out_w, wo = p % g.out_w;
      for (int64_t k = 0; k < taps; ++k) {
        Sample<T>& s = samples[p * taps + k];
        s = Sample<T>{};
        const T y = static_cast<T>(ho * g.stride_h - g.pad_h + (k / g.kw) * g.dil_h) + offset[(2 * k) * np + p];
        const T x = static_cast<T>(wo * g.stride_w - g.pad_w + (k % g.kw) * g.dil_w) + offset[(2 * k + 1) * np + p];
        if (!(y > T(-1) && x > T(-1) && y < static_cast<T>(g.height) && x < static_cast<T>(g.width))) continue;
        const T fy = std::floor(y), fx = std::floor(x);
        const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
        const int64_t y1 = y0 + 1, x1 = x0 + 1;
        const T ly = y - fy, lx = x - fx, hy = T(1) - ly, hx = T(1) - lx;
        const bool in_y0 = y0 >= 0, in_y1 = y1 <= g.height - 1, in_x0 = x0 >= 0, in_x1 = x1 <= g.width - 1;
        const bool inside[4] = {in_y0 && in_x0, in_y0 && in_x1, in_y1 && in_x0, in_y1 && in_x1};
        const int64_t cy[4] = {y0, y0, y1, y1}, cx[4] = {x0, x1, x0, x1};
        const T cw[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
        const T cdy[4] = {-hx, -lx, hx, lx}, cdx[4] = {-hy, hy, -ly, ly};
        for (int c = 0; c < 4; ++c) {
          if (!inside[c]) continue;
          s.idx[c] = static_cast<int32_t>(cy[c] * g.width + cx[c]);
          s.w[c] = cw[c];
          s.dy[c] = cdy[c];
          s.dx[c] = cdx[c];
        }
      }
    }
  });
}

// The fp32 sampling loop is compiled for AVX-512, AVX2 + FMA and the baseline (GLIP_VECTOR_CLONES, ops.h); measured on
// AVX-512: a 100x152x256 DCN forward 66 -> 53 ms together with the smaller blocks of `block_positions`.
// out[c] = m * (w0 x0[c] + w1 x1[c] + w2 x2[c] + w3 x3[c]) for c < n: one tap's bilinear sample of a channel run.
GLIP_VECTOR_CLONES void blend_corners(float* __restrict__ out, const float* __restrict__ x0,
                                      const float* __restrict__ x1, const float* __restrict__ x2,
                                      const float* __restrict__ x3, float w0, float w1, float w2, float w3, float m,
                                      int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] = m * (w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]);
}

template <typename T>
void blend_corners(T* __restrict__ out, const T* __restrict__ x0, const T* __restrict__ x1, const T* __restrict__ x2,
                   const T* __restrict__ x3, T w0, T w1, T w2, T w3, T m, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] = m * (w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]);
}

// A run of channels [c0, c1) inside one convolution group `group` and one deformable group `dg`.
struct Segment {
  int64_t c0, c1, group, dg;
};

std::vector<Segment> channel_segments(int64_t channels, int64_t groups, int64_t deformable_groups, int64_t lo,
                                      int64_t hi) {
  const int64_t per_group = channels / groups, per_dg = channels / deformable_groups;
  std::vector<Segment> out;
  int64_t c = lo;
  while (c < hi) {
    const int64_t next = std::min({hi, (c / per_group + 1) * per_group, (c / per_dg + 1) * per_dg});
    out.push_back(Segment{c, next, c / per_group, c / per_dg});
    c = next;
  }
  return out;
}

// Columns of one image for output positions [p0, p1), channels-last: a (p1 - p0, C*K) block whose row p holds,
// for group gi, tap k and channel cc of the group, at gi*K*Cg + k*Cg + cc: mask * bilinear(input, location).
// `input` is (H*W, C) channels-last, so every sample reads four contiguous channel vectors.
template <typename T>
void deformable_im2col(const T* input, const T* mask, const std::vector<std::vector<Sample<T>>>& samples,
                       const ConvGeometry& g, int64_t groups, const std::vector<Segment>& segments, int64_t p0,
                       int64_t p1, T* cols) {
  const int64_t taps = g.taps(), np = g.out_plane(), C = g.channels, cg = C / groups;
  at::parallel_for(p0, p1, 16, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* row = cols + (p - p0) * C * taps;
      for (const Segment& sg : segments) {
        const int64_t n = sg.c1 - sg.c0;
        for (int64_t k = 0; k < taps; ++k) {
          const Sample<T>& s = samples[sg.dg][p * taps + k];
          const T m = mask[(sg.dg * taps + k) * np + p];
          blend_corners(row + sg.group * taps * cg + k * cg + (sg.c0 - sg.group * cg), input + s.idx[0] * C + sg.c0,
                        input + s.idx[1] * C + sg.c0, input + s.idx[2] * C + sg.c0, input + s.idx[3] * C + sg.c0,
                        s.w[0], s.w[1], s.w[2], s.w[3], m, n);
        }
      }
    }
  });
}

// Fused backward of the sampling for output positions [p0, p1) of one image, given grad_cols in the column
// layout above: scatters into grad_input ((H*W, C) channels-last), writes the mask/offset gradients of these
// positions and refills `cols` (needed for the weight gradient). Threads own channel slices, so the scatter
// never races; the per-position sums over channels are reduced across slices at the end.
template <typename T>
void deformable_col2im(const T* input, const T* mask, const std::vector<std::vector<Sample<T>>>& samples,
                       const ConvGeometry& g, int64_t groups, int64_t p0, int64_t p1, const T* grad_cols, T* cols,
                       T* grad_input, T* grad_offset, T* grad_mask) {
  const int64_t taps = g.taps(), np = g.out_plane(), len = p1 - p0, C = g.channels, cg = C / groups;
  const int64_t n_dg = static_cast<int64_t>(samples.size());
  const int64_t n_slices = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), C / 16));
  const int64_t acc_size = n_dg * taps * len;
  std::vector<T> acc(n_slices * 3 * acc_size, T(0));
  at::parallel_for(0, n_slices, 1, [&](int64_t slice_begin, int64_t slice_end) {
    for (int64_t slice = slice_begin; slice < slice_end; ++slice) {
      T* acc_m = acc.data() + slice * 3 * acc_size;
      T* acc_y = acc_m + acc_size;
      T* acc_x = acc_y + acc_size;
      const std::vector<Segment> segments =
          channel_segments(C, groups, n_dg, C * slice / n_slices, C * (slice + 1) / n_slices);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t row_offset = (p - p0) * C * taps;
        for (const Segment& sg : segments) {
          const int64_t n = sg.c1 - sg.c0;
          for (int64_t k = 0; k < taps; ++k) {
            const Sample<T>& s = samples[sg.dg][p * taps + k];
            const T m = mask[(sg.dg * taps + k) * np + p];
            const int64_t col_offset = row_offset + sg.group * taps * cg + k * cg + (sg.c0 - sg.group * cg);
            const T* __restrict__ gc = grad_cols + col_offset;
            T* __restrict__ col = cols + col_offset;
            const T *__restrict__ x0 = input + s.idx[0] * C + sg.c0, *__restrict__ x1 = input + s.idx[1] * C + sg.c0;
            const T *__restrict__ x2 = input + s.idx[2] * C + sg.c0, *__restrict__ x3 = input + s.idx[3] * C + sg.c0;
            const T w0 = s.w[0], w1 = s.w[1], w2 = s.w[2], w3 = s.w[3];
            T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (int64_t c = 0; c < n; ++c) {
              col[c] = m * (w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]);
              s0 += gc[c] * x0[c];
              s1 += gc[c] * x1[c];
              s2 += gc[c] * x2[c];
              s3 += gc[c] * x3[c];
            }
            const int64_t a = (sg.dg * taps + k) * len + (p - p0);
            acc_m[a] += w0 * s0 + w1 * s1 + w2 * s2 + w3 * s3;
            acc_y[a] += m * (s.dy[0] * s0 + s.dy[1] * s1 + s.dy[2] * s2 + s.dy[3] * s3);
            acc_x[a] += m * (s.dx[0] * s0 + s.dx[1] * s1 + s.dx[2] * s2 + s.dx[3] * s3);
            for (int corner = 0; corner < 4; ++corner) {
              const T wm = s.w[corner] * m;
              if (wm == T(0)) continue;
              T* __restrict__ gx = grad_input + s.idx[corner] * C + sg.c0;
              for (int64_t c = 0; c < n; ++c) gx[c] += wm * gc[c];
            }
          }
        }
      }
    }
  });
  for (int64_t dk = 0; dk < n_dg * taps; ++dk) {
    T* gm = grad_mask + dk * np + p0;
    T* gy = grad_offset + (2 * dk) * np + p0;
    T* gxo = grad_offset + (2 * dk + 1) * np + p0;
    for (int64_t p = 0; p < len; ++p) {
      T sm = T(0), sy = T(0), sx = T(0);
      for (int64_t slice = 0; slice < n_slices; ++slice) {
        const T* a = acc.data() + slice * 3 * acc_size + dk * len + p;
        sm += a[0];
        sy += a[acc_size];
        sx += a[2 * acc_size];
      }
      gm[p] = sm;
      gy[p] = sy;
      gxo[p] = sx;
    }
  }
}

// Output positions per block: the (positions, C*K) columns of a block stay below `entries` (the forward: 2M, 8 MB
// in fp32, still in the last-level cache when the product reads them; the backward, whose products are PyTorch's:
// 16M, fewer and larger products), in blocks of even length.
int64_t block_positions(int64_t row_size, int64_t positions, int64_t entries) {
  const int64_t limit = std::max<int64_t>(64, entries / std::max<int64_t>(row_size, 1));
  const int64_t n_blocks = (positions + limit - 1) / limit;
  return (positions + n_blocks - 1) / n_blocks;
}

ConvGeometry geometry(const at::Tensor& input, const at::Tensor& weight, int64_t out_h, int64_t out_w,
                      int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                      int64_t dil_w) {
  return ConvGeometry{input.size(1), input.size(2), input.size(3), out_h,   out_w, weight.size(2), weight.size(3),
                      stride_h,      stride_w,      pad_h,         pad_w,   dil_h, dil_w};
}

}  // namespace

at::Tensor deform_conv_forward_cpu(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& mask_,
                                   const at::Tensor& weight_, const at::Tensor& bias_, int64_t stride_h,
                                   int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                   int64_t groups, int64_t deformable_groups) {
  const auto out_hw = deform_conv_check(input_, offset_, mask_, weight_, bias_, stride_h, stride_w, pad_h, pad_w,
                                        dil_h, dil_w, groups, deformable_groups);
  const at::Tensor offset = offset_.contiguous(), mask = mask_.contiguous();
  const ConvGeometry g =
      geometry(input_, weight_, out_hw.first, out_hw.second, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
  const int64_t batch = input_.size(0), out_channels = weight_.size(0), taps = g.taps(), np = g.out_plane();
  const int64_t cg_k = g.channels / groups * taps, og = out_channels / groups;
  // (B, H, W, C) channels-last input and (Cout, kh, kw, C/groups) weight, matching the column layout.
  const at::Tensor input = input_.permute({0, 2, 3, 1}).contiguous();
  const at::Tensor weight = weight_.permute({0, 2, 3, 1}).reshape({out_channels, cg_k});
  // fp32 products through oneDNN (below) write their (positions, Cout) blocks straight into a channels-last output
  // when the input is channels-last (the layout the detector's fusion blocks hand over), else into NCHW.
  const bool channels_last = input_.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const int64_t block = block_positions(g.channels * taps, np, int64_t(1) << 21);
  at::Tensor cols = at::empty({block, g.channels * taps}, input.options());
  const bool has_bias = bias_.defined() && bias_.numel() > 0;
  const at::Tensor bias = has_bias ? bias_.to(input.scalar_type()).view({out_channels, 1}) : at::Tensor();
  const std::vector<Segment> segments = channel_segments(g.channels, groups, deformable_groups, 0, g.channels);
  // fp32, one group: the product runs as a oneDNN 1x1 convolution (its kernels reach ~2x MKL's sgemm rate on
  // AVX-512 machines where MKL picks a narrower code path); otherwise, and with GLIP_CPU_GEMM=mkl, addmm.
  const char* gemm_choice = std::getenv("GLIP_CPU_GEMM");
  const bool onednn = groups == 1 && input.scalar_type() == at::kFloat && at::globalContext().userEnabledMkldnn() &&
                      !(gemm_choice != nullptr && std::string(gemm_choice) == "mkl");
  const at::Tensor weight_1x1 = onednn ? weight.view({out_channels, cg_k, 1, 1}) : at::Tensor();
  at::Tensor output = at::empty({batch, out_channels, g.out_h, g.out_w},
                                input.options().memory_format(onednn && channels_last ? at::MemoryFormat::ChannelsLast
                                                                                      : at::MemoryFormat::Contiguous));
  const bool rows_out = onednn && channels_last;  // output rows (positions) of Cout values
  const at::Tensor bias_flat = has_bias ? bias.view({out_channels}) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_forward_cpu", [&] {
    std::vector<std::vector<Sample<scalar_t>>> samples(deformable_groups);
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* off_b = offset.data_ptr<scalar_t>() + b * offset.stride(0);
      for (int64_t d = 0; d < deformable_groups; ++d) build_samples(off_b + d * 2 * taps * np, g, samples[d]);
      const at::Tensor out_b = rows_out ? output[b].permute({1, 2, 0}).reshape({np, out_channels})
                                        : output[b].view({out_channels, np});
      for (int64_t p0 = 0; p0 < np; p0 += block) {
        const int64_t p1 = std::min(np, p0 + block), len = p1 - p0;
        deformable_im2col<scalar_t>(input.data_ptr<scalar_t>() + b * input.stride(0),
                                    mask.data_ptr<scalar_t>() + b * mask.stride(0), samples, g, groups, segments,
                                    p0, p1, cols.data_ptr<scalar_t>());
        if (onednn) {
          // (len, C*K) columns as a channels-last (1, C*K, len, 1) image; the 1x1 convolution is their product
          // with the weight, (len, Cout) channels-last: copied as rows into a channels-last output, else transposed.
          const at::Tensor image = cols.narrow(0, 0, len).view({1, len, 1, cg_k}).permute({0, 3, 1, 2});
          const at::Tensor prod = at::conv2d(image, weight_1x1, has_bias ? bias_flat : at::Tensor());
          if (rows_out) {
            out_b.narrow(0, p0, len).copy_(prod.permute({0, 2, 3, 1}).reshape({len, out_channels}));
          } else {
            out_b.narrow(1, p0, len).copy_(prod.view({out_channels, len}));
          }
          continue;
        }
        for (int64_t gi = 0; gi < groups; ++gi) {
          at::Tensor out_block = out_b.narrow(0, gi * og, og).narrow(1, p0, len);
          const at::Tensor cols_g = cols.narrow(0, 0, len).narrow(1, gi * cg_k, cg_k);
          const at::Tensor w_g = weight.narrow(0, gi * og, og);
          if (has_bias) {
            out_block.copy_(bias.narrow(0, gi * og, og).expand({og, len}));
            out_block.addmm_(w_g, cols_g.t());
          } else {
            out_block.copy_(at::mm(w_g, cols_g.t()));
          }
        }
      }
    }
  });
  return output;
}

DeformGrads deform_conv_backward_cpu(const at::Tensor& grad_output_, const at::Tensor& input_,
                                     const at::Tensor& offset_, const at::Tensor& mask_, const at::Tensor& weight_,
                                     const at::Tensor& bias_, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                                     int64_t deformable_groups) {
  const auto out_hw = deform_conv_check(input_, offset_, mask_, weight_, bias_, stride_h, stride_w, pad_h, pad_w,
                                        dil_h, dil_w, groups, deformable_groups);
  const at::Tensor offset = offset_.contiguous(), mask = mask_.contiguous();
  const ConvGeometry g =
      geometry(input_, weight_, out_hw.first, out_hw.second, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
  const int64_t batch = input_.size(0), out_channels = weight_.size(0), taps = g.taps(), np = g.out_plane();
  const int64_t cg_k = g.channels / groups * taps, og = out_channels / groups;
  const at::Tensor grad_output = grad_output_.to(input_.scalar_type()).contiguous();
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == batch && grad_output.size(1) == out_channels &&
                  grad_output.size(2) == g.out_h && grad_output.size(3) == g.out_w,
              "deform_conv_backward: grad_output has the wrong shape ", grad_output.sizes());
  const at::Tensor input = input_.permute({0, 2, 3, 1}).contiguous();
  const at::Tensor weight = weight_.permute({0, 2, 3, 1}).reshape({out_channels, cg_k});

  at::Tensor grad_input = at::zeros_like(input);  // channels-last
  at::Tensor grad_offset = at::zeros_like(offset);
  at::Tensor grad_mask = at::zeros_like(mask);
  at::Tensor grad_weight = at::zeros({out_channels, cg_k}, input.options());
  const bool has_bias = bias_.defined() && bias_.numel() > 0;
  at::Tensor grad_bias = has_bias ? grad_output.sum({0, 2, 3}).to(bias_.scalar_type()) : at::Tensor();
  const int64_t block = block_positions(g.channels * taps, np, int64_t(1) << 24);
  at::Tensor cols = at::empty({block, g.channels * taps}, input.options());
  at::Tensor grad_cols = at::empty({block, g.channels * taps}, input.options());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_backward_cpu", [&] {
    std::vector<std::vector<Sample<scalar_t>>> samples(deformable_groups);
    for (int64_t b = 0; b < batch; ++b) {
      const at::Tensor go_b = grad_output[b].view({out_channels, np});
      const scalar_t* off_b = offset.data_ptr<scalar_t>() + b * offset.stride(0);
      for (int64_t d = 0; d < deformable_groups; ++d) build_samples(off_b + d * 2 * taps * np, g, samples[d]);
      for (int64_t p0 = 0; p0 < np; p0 += block) {
        const int64_t p1 = std::min(np, p0 + block), len = p1 - p0;
        for (int64_t gi = 0; gi < groups; ++gi) {
          at::Tensor grad_cols_g = grad_cols.narrow(0, 0, len).narrow(1, gi * cg_k, cg_k);
          const at::Tensor go_g = go_b.narrow(0, gi * og, og).narrow(1, p0, len);
          at::mm_out(grad_cols_g, go_g.t(), weight.narrow(0, gi * og, og));
        }
        deformable_col2im<scalar_t>(input.data_ptr<scalar_t>() + b * input.stride(0),
                                    mask.data_ptr<scalar_t>() + b * mask.stride(0), samples, g, groups, p0, p1,
                                    grad_cols.data_ptr<scalar_t>(), cols.data_ptr<scalar_t>(),
                                    grad_input.data_ptr<scalar_t>() + b * grad_input.stride(0),
                                    grad_offset.data_ptr<scalar_t>() + b * grad_offset.stride(0),
                                    grad_mask.data_ptr<scalar_t>() + b * grad_mask.stride(0));
        for (int64_t gi = 0; gi < groups; ++gi) {
          at::Tensor grad_w_g = grad_weight.narrow(0, gi * og, og);
          const at::Tensor go_g = go_b.narrow(0, gi * og, og).narrow(1, p0, len);
          grad_w_g.addmm_(go_g, cols.narrow(0, 0, len).narrow(1, gi * cg_k, cg_k));
        }
      }
    }
  });
  grad_input = grad_input.permute({0, 3, 1, 2}).contiguous();
  grad_weight = grad_weight.view({out_channels, g.kh, g.kw, g.channels / groups}).permute({0, 3, 1, 2}).contiguous();
  return {grad_input, grad_offset, grad_mask, grad_weight.to(weight_.scalar_type()), grad_bias};
}

}  // namespace glip
