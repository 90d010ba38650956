// `keel verify model`: the certificate that a model moved from one backend
// (or weight format) to another still computes the same function. A fixed
// prompt set is decoded greedily on the first backend; the second is fed the
// same tokens and compared step by step (largest logit difference, top-1
// agreement); each backend's perplexity on the held-out split is measured
// through the same inference forward.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "serve/inference_model.h"
#include "store/model_weights.h"

namespace keel::serve {

// The fixed prompts (plain English text; the same for every model).
const std::vector<std::string>& verify_prompts();

struct PromptAgreement {
  std::string prompt;
  int64_t prompt_tokens = 0;
  int64_t steps = 0;         // logit rows compared (last prompt position + each output)
  int64_t top1_agree = 0;    // rows whose argmax is the same on both
  float max_logit_diff = 0;  // largest |a - b| over those rows
};

// Greedy decode of `max_new` tokens of each prompt on a, teacher-forced on b.
std::vector<PromptAgreement> compare_greedy(InferenceModel& a, InferenceModel& b,
                                            const data::Tokenizer& tok,
                                            const std::vector<std::string>& prompts,
                                            int64_t max_new);

// exp(mean next-token cross-entropy) over tokens in windows of the model's
// context (each window is a fresh sequence). At most max_tokens predictions.
struct Perplexity {
  double ppl = 0, nats = 0;
  int64_t tokens = 0;
};
Perplexity perplexity(InferenceModel& m, std::span<const int32_t> tokens, int64_t max_tokens);

// The held-out split of a run directory (its config's corpus, tokenized and
// split the way training did), or of a token shard file. Throws IoError
// naming what is missing.
std::vector<int32_t> held_out_tokens(const std::string& model_path, const std::string& shard,
                                     int64_t max_tokens);

}  // namespace keel::serve
