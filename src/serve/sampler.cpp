#include "serve/sampler.h"

#include <vector>

#include "core/rng.h"
#include "train/generation.h"

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

int32_t sample_next(std::span<float> logits, std::span<const int32_t> seen,
                    const SamplingParams& params, uint64_t index) {
  apply_repetition_penalty(logits, seen, params.repetition_penalty);
  train::SampleOptions o;
  o.temperature = params.temperature;
  o.top_k = params.top_k;
  o.top_p = params.top_p;
  const Rng rng(params.seed, 0x7365727665);  // stream "serve"
  return train::sample_token(logits, o, double(rng.uniform(index)));
}

}  // namespace keel::serve
