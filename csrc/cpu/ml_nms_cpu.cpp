// CPU multi-label NMS: greedy suppression in descending (stable) score order, only between boxes of one label.
#include <ATen/OpMathType.h>

#include <algorithm>
#include <vector>

#include "../ops.h"

namespace glip {

at::Tensor ml_nms_cpu(const at::Tensor& boxes_, const at::Tensor& scores_, const at::Tensor& labels_,
                      double threshold) {
  TORCH_CHECK(boxes_.dim() == 2 && boxes_.size(1) == 4, "ml_nms: boxes must be (N, 4), got ", boxes_.sizes());
  const int64_t n = boxes_.size(0);
  TORCH_CHECK(scores_.numel() == n && labels_.numel() == n, "ml_nms: scores and labels must have N entries");
  if (n == 0) return at::empty({0}, boxes_.options().dtype(at::kLong));
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor labels = labels_.reshape({n}).to(at::kDouble).contiguous();
  const at::Tensor order = std::get<1>(scores_.reshape({n}).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const int64_t* ord = order.data_ptr<int64_t>();
  const double* lab = labels.data_ptr<double>();
  std::vector<int64_t> keep;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "ml_nms_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* b = boxes.data_ptr<scalar_t>();
    std::vector<acc_t> area(n);
    for (int64_t i = 0; i < n; ++i) {
      area[i] = (acc_t(b[4 * i + 2]) - acc_t(b[4 * i]) + 1) * (acc_t(b[4 * i + 3]) - acc_t(b[4 * i + 1]) + 1);
    }
    const acc_t thr = static_cast<acc_t>(threshold);
    std::vector<char> suppressed(n, 0);
    for (int64_t ii = 0; ii < n; ++ii) {
      const int64_t i = ord[ii];
      if (suppressed[i]) continue;
      keep.push_back(i);
      const acc_t ix1 = b[4 * i], iy1 = b[4 * i + 1], ix2 = b[4 * i + 2], iy2 = b[4 * i + 3];
      for (int64_t jj = ii + 1; jj < n; ++jj) {
        const int64_t j = ord[jj];
        if (suppressed[j] || lab[j] != lab[i]) continue;
        const acc_t w = std::max(acc_t(0), std::min(ix2, acc_t(b[4 * j + 2])) - std::max(ix1, acc_t(b[4 * j])) + 1);
        const acc_t h = std::max(acc_t(0), std::min(iy2, acc_t(b[4 * j + 3])) - std::max(iy1, acc_t(b[4 * j + 1])) + 1);
        const acc_t inter = w * h;
        if (inter / (area[i] + area[j] - inter) > thr) suppressed[j] = 1;
      }
    }
  });
  return at::tensor(keep, boxes_.options().dtype(at::kLong));
}

}  // namespace glip
