// CPU inference kernel of GLIP's bidirectional fusion attention, evaluated in blocks of visual rows.
//
// Inputs are the text-side operands already folded by `glip.layers.blocked_attention` (all heads side by side,
// valid tokens of every head first): for a block of rows of v, the logits are A = v q_t + q_b (clamped), then
//   image side: per head, softmax over its valid tokens of (A + bias_v); delta_v = out_bias + P u;
//   text side: an online softmax over the rows of every column of A (running max, sum and E^T v, rescaled
//   when the max grows), returned unnormalised as (max, sum, E^T v) and merged over the threads at the end.
// Threads take whole chunks of blocks (single-threaded GEMMs on L2/L3-sized operands, no barrier per operation); the
// elementwise steps are ATen's vectorised kernels, so values match the PyTorch fallback up to summation order.
#include <ATen/Parallel.h>

#include <atomic>
#include <limits>
#include <vector>

#include "../ops.h"
#include "serial_blas.h"

namespace glip {
namespace {

// Chunks of consecutive row blocks (units of work handed to the threads; at least 4 per thread on 2 cores).
constexpr int64_t kChunks = 8;

// Online-softmax state of the text side for one range of rows: column max (W), column sum (W), E^T v (W, D).
struct TextState {
  at::Tensor max, sum, acc;
};

TextState empty_state(int64_t width, int64_t dim, const at::TensorOptions& options) {
  return {at::full({width}, -std::numeric_limits<double>::infinity(), options), at::zeros({width}, options),
          at::zeros({width, dim}, options)};
}

// Folds `e` (rows, W) = exp(A - new max) of one block into `state`.
void update_text_state(TextState& state, const at::Tensor& attn, const at::Tensor& vb) {
  const at::Tensor new_max = at::maximum(state.max, at::amax(attn, 0));
  const at::Tensor rescale = at::exp(state.max - new_max);
  state.max = new_max;
  const at::Tensor e = at::sub(attn, new_max).exp_();
  state.sum.mul_(rescale).add_(e.sum(0));
  state.acc.mul_(rescale.unsqueeze(1)).addmm_(e.t(), vb);
}

void merge_into(TextState& total, const TextState& part) {
  const at::Tensor new_max = at::maximum(total.max, part.max);
  const at::Tensor a = at::exp(total.max - new_max), b = at::exp(part.max - new_max);
  total.sum = total.sum * a + part.sum * b;
  total.acc = total.acc * a.unsqueeze(1) + part.acc * b.unsqueeze(1);
  total.max = new_max;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> bi_attention_forward_cpu(const at::Tensor& v_, const at::Tensor& q_t,
                                                            const at::Tensor& q_b, const at::Tensor& u,
                                                            const at::Tensor& bias_v, const at::Tensor& out_bias,
                                                            int64_t heads, bool clamp_min, bool clamp_max,
                                                            double clamp_limit, int64_t block_rows) {
  TORCH_CHECK(v_.dim() == 2 && q_t.dim() == 2 && u.dim() == 2, "bi_attention: v, q_t and u must be 2-D");
  const at::Tensor v = v_.contiguous();
  const int64_t n = v.size(0), dim = v.size(1), width = q_t.size(1), valid_width = u.size(0);
  TORCH_CHECK(q_t.size(0) == dim && q_b.numel() == width && u.size(1) == dim && out_bias.numel() == dim,
              "bi_attention: operand shapes do not match");
  TORCH_CHECK(heads > 0 && valid_width % heads == 0 && valid_width <= width, "bi_attention: bad head split");
  TORCH_CHECK(!bias_v.defined() || bias_v.numel() == 0 || bias_v.numel() == valid_width,
              "bi_attention: bias_v must have heads * valid tokens entries");
  TORCH_CHECK(v.scalar_type() == q_t.scalar_type() && u.scalar_type() == v.scalar_type(),
              "bi_attention: operands must share one dtype");
  const bool has_bias = bias_v.defined() && bias_v.numel() > 0;
  const int64_t rows = std::max<int64_t>(1, block_rows), n_blocks = (n + rows - 1) / rows;
  const int64_t valid = valid_width / heads;
  at::Tensor delta_v = at::empty({n, dim}, v.options());
  // Fixed chunks of consecutive blocks, one online-softmax state each, handed out to the threads dynamically and
  // merged in chunk order: the result does not depend on the number of threads or on scheduling.
  const int64_t n_chunks = std::min<int64_t>(n_blocks, kChunks);
  std::vector<TextState> states(n_chunks);
  std::atomic<int64_t> next_chunk{0};
  const c10::optional<at::Scalar> lo = clamp_min ? c10::optional<at::Scalar>(-clamp_limit) : c10::nullopt;
  const c10::optional<at::Scalar> hi = clamp_max ? c10::optional<at::Scalar>(clamp_limit) : c10::nullopt;

  at::parallel_for(0, std::min<int64_t>(n_chunks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    const SerialBlasGuard serial_blas;
    for (int64_t chunk = next_chunk++; chunk < n_chunks; chunk = next_chunk++) {
      TextState& state = states[chunk];
      state = empty_state(width, dim, v.options());
      for (int64_t blk = chunk * n_blocks / n_chunks; blk < (chunk + 1) * n_blocks / n_chunks; ++blk) {
        const int64_t start = blk * rows, len = std::min(rows, n - start);
        const at::Tensor vb = v.narrow(0, start, len);
        at::Tensor attn = at::addmm(q_b, vb, q_t);  // (len, W)
        if (clamp_min || clamp_max) attn.clamp_(lo, hi);
        at::Tensor logits = attn.narrow(1, 0, valid_width);
        logits = has_bias ? at::add(logits, bias_v) : logits.contiguous();
        const at::Tensor p_v = at::_softmax(logits.view({len, heads, valid}), -1, false).view({len, valid_width});
        at::Tensor out = delta_v.narrow(0, start, len);
        at::addmm_out(out, out_bias, p_v, u);
        update_text_state(state, attn, vb);
      }
    }
  });

  TextState total = states[0];
  for (int64_t c = 1; c < n_chunks; ++c) merge_into(total, states[c]);
  return {delta_v, total.acc / total.sum.unsqueeze(1)};
}

}  // namespace glip
