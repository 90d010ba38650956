#include "serve/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace keel::serve {

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> seen,
                              double penalty) {
  if (penalty == 1.0) return;
  // Each id once: a word repeated ten times is not penalised ten times.
  std::vector<bool> done(logits.size(), false);
  const float p = float(penalty);
  for (int32_t id : seen) {
    if (id < 0 || size_t(id) >= logits.size() || done[size_t(id)]) continue;
    done[size_t(id)] = true;
    float& l = logits[size_t(id)];
    l = l > 0 ? l / p : l * p;
  }
}

namespace {

// std::max_element's answer (the first of the largest; a NaN first element
// wins, any other NaN never does), in two passes that a core runs 2-3x
// faster over a vocabulary of logits: the maximum in eight independent
// chains, where max_element's single compare-and-select chain waits on
// itself every element (measured 36 us -> 15 us for 50257 logits, a
// percent of a small model's decode step), then the first index holding it.
int32_t first_argmax(std::span<const float> v) {
  const size_t n = v.size();
  if (std::isnan(v[0])) return 0;
  constexpr size_t kChains = 8;
  float m[kChains];
  for (float& x : m) x = -INFINITY;
  size_t i = 0;
  for (; i + kChains <= n; i += kChains)
    for (size_t j = 0; j < kChains; ++j) m[j] = v[i + j] > m[j] ? v[i + j] : m[j];
  float best = -INFINITY;
  for (float x : m) best = x > best ? x : best;
  for (; i < n; ++i) best = v[i] > best ? v[i] : best;
  for (size_t k = 0; k < n; ++k)
    if (v[k] == best) return int32_t(k);
  return 0;  // not reached: v[0] is a number, so best is one of the values
}

}  // namespace

int32_t sample_token(std::span<const float> logits, const SamplingParams& params, double u) {
  const int64_t V = int64_t(logits.size());
  if (V == 0) fail("sample_token: empty logits");
  if (params.temperature <= 0) return first_argmax(logits);
  // Candidates by descending logit (stable: ties keep the smaller id first).
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int64_t keep = V;
  if (params.top_k > 0) keep = std::min(keep, params.top_k);
  std::vector<double> p(static_cast<size_t>(keep));
  const double mx = double(logits[order[0]]);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i)
    sum += p[i] = std::exp((double(logits[order[i]]) - mx) / params.temperature);
  if (params.top_p < 1.0) {
    double c = 0;
    int64_t n = 0;
    while (n < keep) {
      c += p[n] / sum;
      ++n;
      if (c >= params.top_p) break;
    }
    keep = n;
    sum = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  }
  const double target = u * sum;
  double c = 0;
  for (int64_t i = 0; i < keep; ++i) {
    c += p[i];
    if (target < c) return order[i];
  }
  return order[keep - 1];
}

void apply_presence_frequency(std::span<float> logits, std::span<const int32_t> generated,
                              double presence, double frequency) {
  if ((presence == 0 && frequency == 0) || generated.empty()) return;
  std::vector<int32_t> ids(generated.begin(), generated.end());
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    const int32_t v = ids[i];
    if (v >= 0 && size_t(v) < logits.size())
      logits[size_t(v)] = float(double(logits[size_t(v)]) - frequency * double(j - i) - presence);
    i = j;
  }
}

TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int64_t n_top) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float v : logits) z += std::exp(double(v) - double(mx));
  const double lse = double(mx) + std::log(z);
  TokenLogprob t;
  t.id = id;
  t.logprob = float(double(logits[size_t(id)]) - lse);
  const size_t n = std::min(size_t(std::max<int64_t>(n_top, 0)), logits.size());
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(),
                    [&](int32_t a, int32_t b) {
                      return logits[size_t(a)] > logits[size_t(b)] ||
                             (logits[size_t(a)] == logits[size_t(b)] && a < b);
                    });
  for (size_t i = 0; i < n; ++i)
    t.top.emplace_back(ids[i], float(double(logits[size_t(ids[i])]) - lse));
  return t;
}

int32_t sample_next(std::span<float> logits, std::span<const int32_t> seen,
                    const SamplingParams& params, uint64_t index) {
  apply_repetition_penalty(logits, seen, params.repetition_penalty);
  const size_t n_out = std::min<size_t>(size_t(index), seen.size());
  apply_presence_frequency(logits, seen.subspan(seen.size() - n_out), params.presence_penalty,
                           params.frequency_penalty);
  const Rng rng(params.seed, 0x7365727665);  // stream "serve"
  return sample_token(logits, params, double(rng.uniform(index)));
}

}  // namespace keel::serve
