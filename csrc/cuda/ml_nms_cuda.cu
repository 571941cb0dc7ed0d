// CUDA multi-label NMS: a pairwise suppression bitmask over score-sorted boxes (64 boxes per word), then the
// greedy scan on the host. Same semantics as the CPU path (+1 widths, same label only, IoU > threshold).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "../ops.h"

namespace glip {
namespace {

constexpr int kBoxesPerWord = 64;

__device__ inline bool suppresses(const float* a, const float* b, float threshold) {
  if (a[4] != b[4]) return false;
  const float w = fmaxf(fminf(a[2], b[2]) - fmaxf(a[0], b[0]) + 1.f, 0.f);
  const float h = fmaxf(fminf(a[3], b[3]) - fmaxf(a[1], b[1]) + 1.f, 0.f);
  const float inter = w * h;
  const float area_a = (a[2] - a[0] + 1.f) * (a[3] - a[1] + 1.f);
  const float area_b = (b[2] - b[0] + 1.f) * (b[3] - b[1] + 1.f);
  return inter / (area_a + area_b - inter) > threshold;
}

// boxes (N, 5) = sorted xyxy + label; mask (N, words): bit j of row i set when box i suppresses box j (j > i).
__global__ void ml_nms_mask_kernel(int n, float threshold, const float* boxes, unsigned long long* mask) {
  const int row_block = blockIdx.y, col_block = blockIdx.x;
  const int rows = min(n - row_block * kBoxesPerWord, kBoxesPerWord);
  const int cols = min(n - col_block * kBoxesPerWord, kBoxesPerWord);
  __shared__ float block_boxes[kBoxesPerWord * 5];
  if (threadIdx.x < cols) {
    for (int f = 0; f < 5; ++f) {
      block_boxes[threadIdx.x * 5 + f] = boxes[(kBoxesPerWord * col_block + threadIdx.x) * 5 + f];
    }
  }
  __syncthreads();
  if (threadIdx.x >= rows) return;
  const int i = kBoxesPerWord * row_block + threadIdx.x;
  const float* box = boxes + i * 5;
  unsigned long long bits = 0;
  const int start = (row_block == col_block) ? threadIdx.x + 1 : 0;
  for (int j = start; j < cols; ++j) {
    if (suppresses(box, block_boxes + j * 5, threshold)) bits |= 1ULL << j;
  }
  const int words = (n + kBoxesPerWord - 1) / kBoxesPerWord;
  mask[int64_t(i) * words + col_block] = bits;
}

}  // namespace

at::Tensor ml_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels,
                       double threshold) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "ml_nms: boxes must be (N, 4), got ", boxes.sizes());
  const int64_t n = boxes.size(0);
  TORCH_CHECK(scores.numel() == n && labels.numel() == n, "ml_nms: scores and labels must have N entries");
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const c10::cuda::CUDAGuard guard(boxes.device());
  const at::Tensor order = std::get<1>(scores.reshape({n}).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted = at::cat({boxes.index_select(0, order).to(at::kFloat),
                                     labels.reshape({n, 1}).index_select(0, order).to(at::kFloat)},
                                    1)
                                .contiguous();
  const int words = static_cast<int>((n + kBoxesPerWord - 1) / kBoxesPerWord);
  at::Tensor mask = at::empty({n, words}, boxes.options().dtype(at::kLong));
  const dim3 blocks(words, words), threads(kBoxesPerWord);
  ml_nms_mask_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      static_cast<int>(n), static_cast<float>(threshold), sorted.data_ptr<float>(),
      reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor mask_cpu = mask.cpu();
  const unsigned long long* bits = reinterpret_cast<const unsigned long long*>(mask_cpu.data_ptr<int64_t>());
  std::vector<unsigned long long> removed(words, 0);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    const int word = static_cast<int>(i / kBoxesPerWord), bit = static_cast<int>(i % kBoxesPerWord);
    if (removed[word] & (1ULL << bit)) continue;
    keep.push_back(i);
    for (int w = word; w < words; ++w) removed[w] |= bits[i * words + w];
  }
  const at::Tensor keep_sorted = at::tensor(keep, at::TensorOptions().dtype(at::kLong)).to(boxes.device());
  return order.index_select(0, keep_sorted);
}

}  // namespace glip
