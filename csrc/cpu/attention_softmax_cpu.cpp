// The two softmaxes of the fusion attention's inference on a block of visual rows (rows, W):
//
// head_softmax: the image side, per row a softmax over each head's valid tokens (the first `valid_width` columns,
// `heads` runs of equal length), read from the strided block and written contiguous (rows, valid_width), in one
// kernel instead of PyTorch's copy + softmax.
//
// column_softmax_step: the text side, one block step of an online softmax over the rows, per column, where each
// text column is normalised over all visual rows while the rows arrive in blocks.
// Given the running column maxima m and sums s of the rows seen so far, a block a (rows, W) becomes
// e = exp(a - m') in place with m' = max(m, column max of a); s becomes s * exp(m - m') + column sum of e, m becomes
// m', and exp(m - m') is returned (the factor that rescales whatever was accumulated with the old maxima). Two
// passes over the block instead of PyTorch's four (amax, sub, exp, sum).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops.h"

namespace glip {
namespace {

// exp(x) for x <= 0 to ~1 ulp (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial in r, times
// 2^n); arguments below -87.34 give exp(-87.34) ~ 1e-38 instead of a denormal or 0. Plain arithmetic, so the
// loops below vectorise; always inlined so that each vector clone gets its own copy.
__attribute__((always_inline)) inline float exp_nonpositive(float x) {
  const float lowest = -87.3365447f;
  x = x < lowest ? lowest : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (|x| < 2^22)
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  return y * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

// Column maxima of columns [c0, c1) into block_max[j - c0].
GLIP_VECTOR_CLONES void column_max(const float* __restrict__ a, int64_t rows, int64_t width, int64_t c0, int64_t c1,
                                   float* __restrict__ block_max) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* __restrict__ row = a + i * width + c0;
    for (int64_t j = 0; j < c1 - c0; ++j) block_max[j] = row[j] > block_max[j] ? row[j] : block_max[j];
  }
}

// a = exp(a - shift) in place on columns [c0, c1), their sums added into sums[j - c0].
GLIP_VECTOR_CLONES void exp_and_sum(float* __restrict__ a, int64_t rows, int64_t width, int64_t c0, int64_t c1,
                                    const float* __restrict__ shift, float* __restrict__ sums) {
  for (int64_t i = 0; i < rows; ++i) {
    float* __restrict__ row = a + i * width + c0;
    for (int64_t j = 0; j < c1 - c0; ++j) {
      const float e = exp_nonpositive(row[j] - shift[j]);
      row[j] = e;
      sums[j] += e;
    }
  }
}

// out[j] = softmax(x)[j] over one contiguous segment of n logits; sums in 16 lanes so that the loops vectorise.
GLIP_VECTOR_CLONES void segment_softmax(const float* __restrict__ x, int64_t n, float* __restrict__ out) {
  float lanes[16];
  for (int l = 0; l < 16; ++l) lanes[l] = -INFINITY;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) lanes[l] = x[j + l] > lanes[l] ? x[j + l] : lanes[l];
  float top = -INFINITY;
  for (int l = 0; l < 16; ++l) top = lanes[l] > top ? lanes[l] : top;
  for (; j < n; ++j) top = x[j] > top ? x[j] : top;
  for (int l = 0; l < 16; ++l) lanes[l] = 0.0f;
  for (j = 0; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) {
      const float e = exp_nonpositive(x[j + l] - top);
      out[j + l] = e;
      lanes[l] += e;
    }
  float total = 0.0f;
  for (int l = 0; l < 16; ++l) total += lanes[l];
  for (; j < n; ++j) {
    out[j] = exp_nonpositive(x[j] - top);
    total += out[j];
  }
  const float inv = 1.0f / total;
  for (j = 0; j < n; ++j) out[j] *= inv;
}

}  // namespace

at::Tensor head_softmax_cpu(const at::Tensor& block, int64_t heads, int64_t valid_width) {
  TORCH_CHECK(block.dim() == 2 && block.scalar_type() == at::kFloat && block.stride(1) == 1,
              "head_softmax: block must be a 2-D float32 tensor with contiguous rows, got ", block.sizes());
  TORCH_CHECK(heads > 0 && valid_width % heads == 0 && valid_width <= block.size(1),
              "head_softmax: ", valid_width, " valid columns do not split into ", heads, " heads of ", block.size(1));
  const int64_t rows = block.size(0), stride = block.stride(0), per_head = valid_width / heads;
  at::Tensor out = at::empty({rows, valid_width}, block.options());
  const float* a = block.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t h = 0; h < heads; ++h)
        segment_softmax(a + i * stride + h * per_head, per_head, o + i * valid_width + h * per_head);
  });
  return out;
}

at::Tensor column_softmax_step_cpu(at::Tensor& block, at::Tensor& col_max, at::Tensor& col_sum) {
  TORCH_CHECK(block.dim() == 2 && block.scalar_type() == at::kFloat && block.is_contiguous(),
              "column_softmax_step: block must be a contiguous 2-D float32 tensor, got ", block.sizes());
  const int64_t rows = block.size(0), width = block.size(1);
  for (const at::Tensor* t : {&col_max, &col_sum}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == width && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "column_softmax_step: column statistics must be contiguous float32 of size ", width);
  }
  at::Tensor rescale = at::empty({width}, block.options());
  float *a = block.data_ptr<float>(), *m = col_max.data_ptr<float>(), *s = col_sum.data_ptr<float>();
  float* r = rescale.data_ptr<float>();
  at::parallel_for(0, width, 64, [&](int64_t c0, int64_t c1) {
    std::vector<float> shift(c1 - c0, -INFINITY), sums(c1 - c0, 0.0f);
    column_max(a, rows, width, c0, c1, shift.data());
    for (int64_t j = c0; j < c1; ++j) {
      const float new_max = std::max(m[j], shift[j - c0]);
      r[j] = std::exp(m[j] - new_max);
      shift[j - c0] = new_max;
    }
    exp_and_sum(a, rows, width, c0, c1, shift.data(), sums.data());
    for (int64_t j = c0; j < c1; ++j) {
      s[j] = s[j] * r[j] + sums[j - c0];
      m[j] = shift[j - c0];
    }
  });
  return rescale;
}

}  // namespace glip
