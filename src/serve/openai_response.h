// Response bodies in OpenAI's formats: whole completions, streamed chunks
// and the server-sent-events framing around them ("data: {json}\n\n", ending
// with "data: [DONE]\n\n").
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

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
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// A fresh id with the endpoint's prefix and 24 hex digits.
std::string new_response_id(Endpoint endpoint);

// A whole (non-streamed) response: text_completion or chat.completion.
nlohmann::json completion_json(const ResponseMeta& meta, const std::string& text,
                               const std::string& finish_reason, const Usage& usage);

// One streamed chunk carrying `text`; `finish_reason` empty means null. For
// chat, `first` adds the assistant role to the delta.
nlohmann::json chunk_json(const ResponseMeta& meta, const std::string& text,
                          const std::string& finish_reason, bool first);

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
