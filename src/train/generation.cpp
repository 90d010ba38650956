#include "train/generation.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace keel::train {

int32_t sample_token(std::span<const float> logits, const SampleOptions& opt, double u) {
  const int64_t V = int64_t(logits.size());
  if (V == 0) fail("sample_token: empty logits");
  if (opt.temperature <= 0)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Candidates by descending logit (stable: ties keep the smaller id first).
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int64_t keep = V;
  if (opt.top_k > 0) keep = std::min(keep, opt.top_k);
  std::vector<double> p(static_cast<size_t>(keep));
  const double mx = double(logits[order[0]]);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i)
    sum += p[i] = std::exp((double(logits[order[i]]) - mx) / opt.temperature);
  if (opt.top_p < 1.0) {
    double c = 0;
    int64_t n = 0;
    while (n < keep) {
      c += p[n] / sum;
      ++n;
      if (c >= opt.top_p) break;
    }
    keep = n;
    sum = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  }
  double target = u * sum, c = 0;
  for (int64_t i = 0; i < keep; ++i) {
    c += p[i];
    if (target < c) return order[i];
  }
  return order[keep - 1];
}

std::vector<int32_t> generate(model::Model& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  const int64_t ctx = model.config().max_seq_len, V = model.config().vocab_size;
  const Rng rng(opt.seed, 0x67656e);  // stream "gen"
  std::vector<int32_t> ids = prompt, out;
  for (int64_t i = 0; i < opt.max_tokens; ++i) {
    const int64_t T = std::min<int64_t>(ctx, int64_t(ids.size()));
    std::vector<int32_t> window(ids.end() - T, ids.end());
    Tensor logits = model.logits(Tensor::from_i32(window, {1, T}));
    const float* last = logits.data<float>() + (T - 1) * V;
    const int32_t next = sample_token({last, size_t(V)}, opt, double(rng.uniform(uint64_t(i))));
    ids.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == opt.stop_id) break;
  }
  return out;
}

}  // namespace keel::train
