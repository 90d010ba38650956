// Text generation from a trained model: temperature, top-k and top-p
// (nucleus) sampling driven by the counter-based RNG, so a (seed, prompt)
// pair always gives the same text. Temperature 0 is greedy decoding.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/model.h"

namespace keel::train {

struct SampleOptions {
  int64_t max_tokens = 200;
  double temperature = 0.8;  // 0: argmax
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;        // 1: no limit
  uint64_t seed = 0;
  int32_t stop_id = -1;  // stop after emitting this id (e.g. <|endoftext|>); -1: never
};

// Picks one id from a row of logits with uniform draw u in [0, 1). Ties in
// greedy mode and in the top-k cut go to the smaller id.
int32_t sample_token(std::span<const float> logits, const SampleOptions& opt, double u);

// Extends `prompt` (non-empty) by up to max_tokens ids; each new id is passed
// to on_token as soon as it is chosen. The context is the last
// model.config().max_seq_len ids. Returns the new ids only.
std::vector<int32_t> generate(model::Model& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token = {});

}  // namespace keel::train
