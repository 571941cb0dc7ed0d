// CPU modulated deformable convolution (DCNv2) as bilinear im2col + GEMM, with a fused backward pass.
//
// Semantics follow the reference CUDA kernel: offsets are (dy, dx) interleaved per kernel tap k = i * kw + j,
// a sampling point contributes only when -1 < y < H and -1 < x < W, corners outside the image read zero, and the
// sampled value is multiplied by the mask. Sampling locations depend on (deformable group, tap, output position)
// but not on the channel, so they are tabulated once per image and reused by every channel of the group.
#include <ATen/Parallel.h>

#include <cmath>
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

// Bilinear sampling table of one deformable group: entry e = k * Ho*Wo + p holds the flat indices of the four
// corners (corner c at c * n + e; 0 for corners outside the image), their weights (0 outside) and, when
// `with_grad`, the derivatives of the weights with respect to the sampling y and x.
template <typename T>
struct SampleTable {
  int64_t n = 0;
  std::vector<int32_t> idx;
  std::vector<T> w, dy, dx;

  void build(const T* offset, const ConvGeometry& g, bool with_grad) {
    const int64_t np = g.out_plane();
    n = g.taps() * np;
    idx.assign(4 * n, 0);
    w.assign(4 * n, T(0));
    if (with_grad) {
      dy.assign(4 * n, T(0));
      dx.assign(4 * n, T(0));
    }
    at::parallel_for(0, g.taps() * g.out_h, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t k = row / g.out_h, ho = row % g.out_h;
        const int64_t ki = k / g.kw, kj = k % g.kw;
        const T* off_y = offset + (2 * k) * np + ho * g.out_w;
        const T* off_x = offset + (2 * k + 1) * np + ho * g.out_w;
        const T base_y = static_cast<T>(ho * g.stride_h - g.pad_h + ki * g.dil_h);
        for (int64_t wo = 0; wo < g.out_w; ++wo) {
          const T y = base_y + off_y[wo];
          const T x = static_cast<T>(wo * g.stride_w - g.pad_w + kj * g.dil_w) + off_x[wo];
          if (!(y > T(-1) && x > T(-1) && y < static_cast<T>(g.height) && x < static_cast<T>(g.width))) continue;
          const int64_t e = k * np + ho * g.out_w + wo;
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
            idx[c * n + e] = static_cast<int32_t>(cy[c] * g.width + cx[c]);
            w[c * n + e] = cw[c];
            if (with_grad) {
              dy[c * n + e] = cdy[c];
              dx[c * n + e] = cdx[c];
            }
          }
        }
      }
    });
  }
};

// Columns (C*K, Ho*Wo) of one image: cols[c*K + k, p] = mask[k, p] * bilinear(input[c], location(k, p)).
template <typename T>
void deformable_im2col(const T* input, const T* mask, const std::vector<SampleTable<T>>& tables,
                       const ConvGeometry& g, T* cols) {
  const int64_t taps = g.taps(), np = g.out_plane();
  const int64_t channels_per_dg = g.channels / static_cast<int64_t>(tables.size());
  at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t d = c / channels_per_dg;
      const SampleTable<T>& t = tables[d];
      const T* x = input + c * g.plane();
      for (int64_t k = 0; k < taps; ++k) {
        const int64_t e0 = k * np;
        const int32_t *i0 = t.idx.data() + e0, *i1 = i0 + t.n, *i2 = i1 + t.n, *i3 = i2 + t.n;
        const T *w0 = t.w.data() + e0, *w1 = w0 + t.n, *w2 = w1 + t.n, *w3 = w2 + t.n;
        const T* m = mask + (d * taps + k) * np;
        T* out = cols + (c * taps + k) * np;
        for (int64_t p = 0; p < np; ++p) {
          out[p] = m[p] * (w0[p] * x[i0[p]] + w1[p] * x[i1[p]] + w2[p] * x[i2[p]] + w3[p] * x[i3[p]]);
        }
      }
    }
  });
}

// Fused backward of the sampling for one image, given grad_cols (C*K, Ho*Wo): scatters into grad_input,
// accumulates the mask/offset gradients and rewrites `cols` (needed for the weight gradient).
template <typename T>
void deformable_col2im(const T* input, const T* mask, const std::vector<SampleTable<T>>& tables,
                       const ConvGeometry& g, const T* grad_cols, T* cols, T* grad_input, T* grad_offset,
                       T* grad_mask) {
  const int64_t taps = g.taps(), np = g.out_plane();
  const int64_t n_dg = static_cast<int64_t>(tables.size());
  const int64_t channels_per_dg = g.channels / n_dg;
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), g.channels));
  const int64_t acc_size = n_dg * taps * np;
  // Per chunk of channels: accumulators of d/dmask, d/dy, d/dx, summed over the chunk's channels.
  std::vector<std::vector<T>> acc(n_chunks, std::vector<T>(3 * acc_size, T(0)));
  at::parallel_for(0, n_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      T* acc_m = acc[chunk].data();
      T* acc_y = acc_m + acc_size;
      T* acc_x = acc_y + acc_size;
      const int64_t c_begin = g.channels * chunk / n_chunks, c_end = g.channels * (chunk + 1) / n_chunks;
      for (int64_t c = c_begin; c < c_end; ++c) {
        const int64_t d = c / channels_per_dg;
        const SampleTable<T>& t = tables[d];
        const T* x = input + c * g.plane();
        T* gx = grad_input + c * g.plane();
        for (int64_t k = 0; k < taps; ++k) {
          const int64_t e0 = k * np, a0 = (d * taps + k) * np;
          const int32_t *i0 = t.idx.data() + e0, *i1 = i0 + t.n, *i2 = i1 + t.n, *i3 = i2 + t.n;
          const T *w0 = t.w.data() + e0, *w1 = w0 + t.n, *w2 = w1 + t.n, *w3 = w2 + t.n;
          const T *y0 = t.dy.data() + e0, *y1 = y0 + t.n, *y2 = y1 + t.n, *y3 = y2 + t.n;
          const T *x0 = t.dx.data() + e0, *x1 = x0 + t.n, *x2 = x1 + t.n, *x3 = x2 + t.n;
          const T* m = mask + a0;
          const T* gc = grad_cols + (c * taps + k) * np;
          T* col = cols + (c * taps + k) * np;
          T *am = acc_m + a0, *ay = acc_y + a0, *ax = acc_x + a0;
          for (int64_t p = 0; p < np; ++p) {
            const T v0 = x[i0[p]], v1 = x[i1[p]], v2 = x[i2[p]], v3 = x[i3[p]];
            const T val = w0[p] * v0 + w1[p] * v1 + w2[p] * v2 + w3[p] * v3;
            const T g_masked = gc[p] * m[p];
            col[p] = m[p] * val;
            am[p] += gc[p] * val;
            ay[p] += g_masked * (y0[p] * v0 + y1[p] * v1 + y2[p] * v2 + y3[p] * v3);
            ax[p] += g_masked * (x0[p] * v0 + x1[p] * v1 + x2[p] * v2 + x3[p] * v3);
          }
          for (int64_t p = 0; p < np; ++p) {
            const T g_masked = gc[p] * m[p];
            gx[i0[p]] += g_masked * w0[p];
            gx[i1[p]] += g_masked * w1[p];
            gx[i2[p]] += g_masked * w2[p];
            gx[i3[p]] += g_masked * w3[p];
          }
        }
      }
    }
  });
  at::parallel_for(0, n_dg * taps, 1, [&](int64_t begin, int64_t end) {
    for (int64_t dk = begin; dk < end; ++dk) {
      T* gm = grad_mask + dk * np;
      T* gy = grad_offset + (2 * dk) * np;
      T* gxo = grad_offset + (2 * dk + 1) * np;
      for (int64_t p = 0; p < np; ++p) {
        T sm = T(0), sy = T(0), sx = T(0);
        for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
          const T* a = acc[chunk].data() + dk * np + p;
          sm += a[0];
          sy += a[acc_size];
          sx += a[2 * acc_size];
        }
        gm[p] = sm;
        gy[p] = sy;
        gxo[p] = sx;
      }
    }
  });
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
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  const ConvGeometry g =
      geometry(input, weight, out_hw.first, out_hw.second, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
  const int64_t batch = input.size(0), out_channels = weight.size(0), taps = g.taps(), np = g.out_plane();
  const int64_t cg_k = g.channels / groups * taps, og = out_channels / groups;
  at::Tensor output = at::empty({batch, out_channels, g.out_h, g.out_w}, input.options());
  at::Tensor cols = at::empty({g.channels * taps, np}, input.options());
  const at::Tensor w_groups = weight.view({groups, og, cg_k});
  const bool has_bias = bias_.defined() && bias_.numel() > 0;
  const at::Tensor bias = has_bias ? bias_.to(input.scalar_type()).contiguous().view({groups, og, 1}) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_forward_cpu", [&] {
    std::vector<SampleTable<scalar_t>> tables(deformable_groups);
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* off_b = offset.data_ptr<scalar_t>() + b * offset.stride(0);
      for (int64_t d = 0; d < deformable_groups; ++d) tables[d].build(off_b + d * 2 * taps * np, g, false);
      deformable_im2col<scalar_t>(input.data_ptr<scalar_t>() + b * input.stride(0),
                                  mask.data_ptr<scalar_t>() + b * mask.stride(0), tables, g,
                                  cols.data_ptr<scalar_t>());
      at::Tensor out_b = output[b].view({groups, og, np});
      const at::Tensor cols_g = cols.view({groups, cg_k, np});
      if (has_bias) {
        at::baddbmm_out(out_b, bias.expand({groups, og, np}), w_groups, cols_g);
      } else {
        at::bmm_out(out_b, w_groups, cols_g);
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
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  const at::Tensor grad_output = grad_output_.to(input.scalar_type()).contiguous();
  const ConvGeometry g =
      geometry(input, weight, out_hw.first, out_hw.second, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
  const int64_t batch = input.size(0), out_channels = weight.size(0), taps = g.taps(), np = g.out_plane();
  const int64_t cg_k = g.channels / groups * taps, og = out_channels / groups;
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == batch && grad_output.size(1) == out_channels &&
                  grad_output.size(2) == g.out_h && grad_output.size(3) == g.out_w,
              "deform_conv_backward: grad_output has the wrong shape ", grad_output.sizes());

  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_offset = at::zeros_like(offset);
  at::Tensor grad_mask = at::zeros_like(mask);
  at::Tensor grad_weight = at::zeros_like(weight);
  const bool has_bias = bias_.defined() && bias_.numel() > 0;
  at::Tensor grad_bias = has_bias ? grad_output.sum({0, 2, 3}).to(bias_.scalar_type()) : at::Tensor();
  at::Tensor cols = at::empty({g.channels * taps, np}, input.options());
  at::Tensor grad_cols = at::empty({g.channels * taps, np}, input.options());
  const at::Tensor w_t = weight.view({groups, og, cg_k}).transpose(1, 2);
  at::Tensor grad_w_groups = grad_weight.view({groups, og, cg_k});
  at::Tensor grad_cols_groups = grad_cols.view({groups, cg_k, np});

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_backward_cpu", [&] {
    std::vector<SampleTable<scalar_t>> tables(deformable_groups);
    for (int64_t b = 0; b < batch; ++b) {
      const at::Tensor go_b = grad_output[b].view({groups, og, np});
      at::bmm_out(grad_cols_groups, w_t, go_b);
      const scalar_t* off_b = offset.data_ptr<scalar_t>() + b * offset.stride(0);
      for (int64_t d = 0; d < deformable_groups; ++d) tables[d].build(off_b + d * 2 * taps * np, g, true);
      deformable_col2im<scalar_t>(input.data_ptr<scalar_t>() + b * input.stride(0),
                                  mask.data_ptr<scalar_t>() + b * mask.stride(0), tables, g,
                                  grad_cols.data_ptr<scalar_t>(), cols.data_ptr<scalar_t>(),
                                  grad_input.data_ptr<scalar_t>() + b * grad_input.stride(0),
                                  grad_offset.data_ptr<scalar_t>() + b * grad_offset.stride(0),
                                  grad_mask.data_ptr<scalar_t>() + b * grad_mask.stride(0));
      grad_w_groups.baddbmm_(go_b, cols.view({groups, cg_k, np}).transpose(1, 2));
    }
  });
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

}  // namespace glip
