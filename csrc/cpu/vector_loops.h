// Inner loops of the CPU kernels, compiled for several x86-64 levels (AVX-512, AVX2+FMA, baseline) and chosen at
// load time (GCC function multi-versioning), so that the extension needs no -march flag and still runs anywhere.
#pragma once
#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define GLIP_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GLIP_CPU_CLONES
#endif

namespace glip {

// out[c] = m * (w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]) for c < n: one masked bilinear sample of n
// channels from four channels-last pixel rows.
GLIP_CPU_CLONES static void bilinear_channels(float* __restrict__ out, const float* __restrict__ x0,
                                              const float* __restrict__ x1, const float* __restrict__ x2,
                                              const float* __restrict__ x3, float w0, float w1, float w2, float w3,
                                              float m, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] = m * (w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]);
}

static inline void bilinear_channels(double* __restrict__ out, const double* __restrict__ x0,
                              const double* __restrict__ x1, const double* __restrict__ x2,
                              const double* __restrict__ x3, double w0, double w1, double w2, double w3, double m,
                              int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] = m * (w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]);
}

}  // namespace glip
