// Parsing and validation of OpenAI request bodies (/v1/completions and
// /v1/chat/completions) into engine sampling parameters. Every rejection is an
// ApiError naming the offending field, so a client sees which value to fix.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "serve/engine.h"
#include "serve/openai_error.h"

namespace keel::serve {

enum class Endpoint { Completions, ChatCompletions };

// What the model allows; values outside it are rejected while parsing.
struct RequestLimits {
  int64_t context_length = 0;  // prompt + output tokens
  int32_t vocab_size = 0;      // token-id prompts must lie in [0, vocab_size)
};

// A validated request. For Completions the prompt is either text or token
// ids (prompt_is_ids); for ChatCompletions it is `messages`, to be rendered
// with the model's chat template.
struct ParsedRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;
  bool prompt_is_ids = false;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  std::vector<std::pair<std::string, std::string>> messages;  // (role, content)
  SamplingParams sampling;
  // max_tokens (or max_completion_tokens) as sent; unset: the server picks.
  std::optional<int64_t> max_tokens;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool seed_given = false;     // the request named a seed (else the server draws one)
  int64_t n = 1;               // choices; choice i samples with seed + i
};

// Byte offset of the first invalid UTF-8 sequence in `s` (overlong forms,
// surrogates and code points above U+10FFFF count as invalid), or npos.
size_t find_invalid_utf8(std::string_view s);

// Parses and validates a request body. Throws ApiError (400) for malformed
// JSON, invalid UTF-8, wrong field types and out-of-range values, naming the
// field in `param`. Unknown fields are ignored (clients send extras), but
// known features keel does not implement (n > 1, logprobs, tools, ...) are
// rejected rather than silently dropped.
ParsedRequest parse_request(Endpoint endpoint, std::string_view body, const RequestLimits& limits);

}  // namespace keel::serve
