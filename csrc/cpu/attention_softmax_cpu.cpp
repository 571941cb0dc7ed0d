// The text side of the fusion attention's inference: one block step of an online softmax over the rows of a
// (rows, W) map, per column, where each text column is normalised over all visual rows while the rows arrive in
// blocks.
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

}  // namespace

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
