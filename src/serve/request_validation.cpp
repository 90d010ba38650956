#include "serve/request_validation.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

namespace keel::serve {

namespace {

[[noreturn]] void bad(const char* field, const std::string& msg) {
  throw RequestError(field, fmt::format("{}: {}", field, msg));
}

}  // namespace

int64_t validate_request(const Request& req, int64_t vocab_size, int64_t ctx) {
  const int64_t T = int64_t(req.prompt.size());
  if (T == 0) bad("prompt", "the prompt has no tokens");
  if (T >= ctx)
    bad("prompt", fmt::format("the prompt has {} tokens; the context holds {} (prompt and at "
                              "least one output token)",
                              T, ctx));
  for (size_t i = 0; i < req.prompt.size(); ++i)
    if (req.prompt[i] < 0 || req.prompt[i] >= vocab_size)
      bad("prompt", fmt::format("token {} at index {} is outside the vocabulary [0, {})",
                                req.prompt[i], i, vocab_size));
  const SamplingParams& s = req.sampling;
  if (s.max_tokens < 1) bad("max_tokens", fmt::format("must be >= 1, got {}", s.max_tokens));
  if (!std::isfinite(s.temperature) || s.temperature < 0)
    bad("temperature", fmt::format("must be a finite number >= 0, got {}", s.temperature));
  if (s.top_k < 0) bad("top_k", fmt::format("must be >= 0, got {}", s.top_k));
  if (!(s.top_p > 0 && s.top_p <= 1))
    bad("top_p", fmt::format("must be in (0, 1], got {}", s.top_p));
  if (!std::isfinite(s.repetition_penalty) || s.repetition_penalty <= 0)
    bad("repetition_penalty",
        fmt::format("must be a finite number > 0, got {}", s.repetition_penalty));
  // OpenAI's range; a NaN would pass a range check written as two compares
  // the other way round and turn every logit it touches into NaN.
  for (auto [name, v] : {std::pair{"presence_penalty", s.presence_penalty},
                         std::pair{"frequency_penalty", s.frequency_penalty}})
    if (!(v >= -2 && v <= 2)) bad(name, fmt::format("must be in [-2, 2], got {}", v));
  for (size_t i = 0; i < s.stop.size(); ++i)
    if (s.stop[i].empty()) bad("stop", fmt::format("stop string {} is empty", i));
  return std::min(s.max_tokens, ctx - T);
}

}  // namespace keel::serve
