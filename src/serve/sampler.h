// Token selection, the one sampler keel has (`keel serve` and `keel generate`
// both decode through the engine): repetition penalty applied to the logits,
// then greedy, temperature, top-k and top-p with a uniform draw from the
// request's own counter-based RNG stream, so one (seed, prompt) pair always
// gives the same text whatever else is batched.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "serve/engine.h"

namespace keel::serve {

// CTRL-style repetition penalty in place: every id in `seen` (prompt and
// output ids; duplicates count once) has its logit divided by `penalty` when
// positive and multiplied by it when negative. penalty == 1 is a no-op.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> seen,
                              double penalty);

// OpenAI's presence and frequency penalties in place: logits[v] -= frequency
// * c_v + presence * (c_v > 0), with c_v the count of v in `generated` (the
// output ids so far, not the prompt). Both 0: a no-op.
void apply_presence_frequency(std::span<float> logits, std::span<const int32_t> generated,
                              double presence, double frequency);

// Picks one id from a row of logits with uniform draw u in [0, 1), using
// params.temperature (0: argmax), top_k (0: no limit) and top_p (1: no
// limit). Ties in greedy mode and in the top-k cut go to the smaller id.
int32_t sample_token(std::span<const float> logits, const SamplingParams& params, double u);

// id's log-probability under a row of raw logits (log-softmax in f64) and the
// n_top most likely ids with theirs, descending, ties to the smaller id.
TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int64_t n_top);

// Picks the next id for token number `index` (0-based count of output tokens)
// of a request. `seen` is the prompt followed by the `index` output ids so
// far. `logits` is modified (penalties). Deterministic in (params.seed,
// index, logits, seen).
int32_t sample_next(std::span<float> logits, std::span<const int32_t> seen,
                    const SamplingParams& params, uint64_t index);

}  // namespace keel::serve
