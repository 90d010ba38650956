// Response bodies in OpenAI's formats: whole completions, streamed chunks
// and the server-sent-events framing around them ("data: {json}\n\n", ending
// with "data: [DONE]\n\n").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "serve/engine.h"
#include "serve/openai_request.h"

namespace keel::serve {

// Fields shared by every body of one request.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::Completions;
  std::string id;       // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
  // The sampling seed the request ran with (sent, or drawn for it): a client
  // can replay a sampled answer by sending it back.
  uint64_t seed = 0;
  bool logprobs = false;  // the request asked for log-probabilities
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  // Prompt tokens served from the prefix cache: usage.prompt_tokens_details.
  int64_t cached_tokens = 0;
};

// A fresh id with the endpoint's prefix and 24 hex digits.
std::string new_response_id(Endpoint endpoint);

// The `logprobs` object of a choice for tokens `lp` in OpenAI's shape:
// completions {tokens, token_logprobs, top_logprobs, text_offset} (offsets in
// bytes from `text_offset0`, the completion bytes before these tokens); chat
// {content: [{token, logprob, bytes, top_logprobs}]}.
nlohmann::json logprobs_json(const ResponseMeta& meta, const data::Tokenizer& tok,
                             const std::vector<TokenLogprob>& lp, int64_t text_offset0 = 0);

// A whole (non-streamed) response: text_completion or chat.completion.
// `logprobs` is the choice's logprobs object (null when not asked for).
nlohmann::json completion_json(const ResponseMeta& meta, const std::string& text,
                               const std::string& finish_reason, const Usage& usage,
                               const nlohmann::json& logprobs = nullptr);

// One streamed chunk carrying `text` of choice `index`; `finish_reason` empty
// means null. For chat, `first` adds the assistant role to the delta.
nlohmann::json chunk_json(const ResponseMeta& meta, const std::string& text,
                          const std::string& finish_reason, bool first,
                          const nlohmann::json& logprobs = nullptr, int64_t index = 0);

// The final chunk of stream_options.include_usage: no choices, only usage.
nlohmann::json usage_chunk_json(const ResponseMeta& meta, const Usage& usage);

// Serialises JSON for the wire. Generated text may hold invalid UTF-8 (a
// byte-level model can emit any bytes); it is replaced by U+FFFD, never thrown.
std::string json_text(const nlohmann::json& j);

// "data: <json>\n\n"
std::string sse_event(const nlohmann::json& j);
// "data: [DONE]\n\n"
std::string sse_done();

}  // namespace keel::serve
