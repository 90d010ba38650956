#include "serve/openai_response.h"

#include <atomic>
#include <chrono>
#include <random>

#include <fmt/format.h>

namespace keel::serve {

using nlohmann::json;

namespace {

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json finish_json(const std::string& finish_reason) {
  return finish_reason.empty() ? json(nullptr) : json(finish_reason);
}

json header_json(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id},
          {"object", object},
          {"created", meta.created},
          {"model", meta.model},
          {"seed", meta.seed}};
}

bool is_chat(const ResponseMeta& meta) {
  return meta.endpoint == Endpoint::ChatCompletions;
}

}  // namespace

std::string new_response_id(Endpoint endpoint) {
  // Ids only need to be unique within a server's life: a random base from
  // the clock and the address space plus a counter.
  static const uint64_t base = [] {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ uint64_t(rd()) ^
           uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  }();
  static std::atomic<uint64_t> counter{0};
  const uint64_t n = counter.fetch_add(1);
  return fmt::format("{}-{:016x}{:08x}",
                     endpoint == Endpoint::ChatCompletions ? "chatcmpl" : "cmpl", base,
                     uint32_t(n));
}

json logprobs_json(const ResponseMeta& meta, const data::Tokenizer& tok,
                   const std::vector<TokenLogprob>& lp, int64_t text_offset0) {
  const auto bytes_of = [&](int32_t id) {
    const std::string& b = tok.token_bytes(id);
    return std::vector<int>(b.begin(), b.end());
  };
  if (is_chat(meta)) {
    json content = json::array();
    for (const TokenLogprob& t : lp) {
      json top = json::array();
      for (const auto& [id, l] : t.top)
        top.push_back({{"token", tok.token_bytes(id)}, {"logprob", l}, {"bytes", bytes_of(id)}});
      content.push_back({{"token", tok.token_bytes(t.id)},
                         {"logprob", t.logprob},
                         {"bytes", bytes_of(t.id)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  int64_t off = text_offset0;
  for (const TokenLogprob& t : lp) {
    tokens.push_back(tok.token_bytes(t.id));
    token_logprobs.push_back(t.logprob);
    json alts = json::object();
    for (const auto& [id, l] : t.top) alts[tok.token_bytes(id)] = l;
    top.push_back(std::move(alts));
    offsets.push_back(off);
    off += int64_t(tok.token_bytes(t.id).size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

json completion_json(const ResponseMeta& meta, const std::string& text,
                     const std::string& finish_reason, const Usage& usage, const json& logprobs) {
  json j = header_json(meta, is_chat(meta) ? "chat.completion" : "text_completion");
  json choice = {
      {"index", 0}, {"logprobs", logprobs}, {"finish_reason", finish_json(finish_reason)}};
  if (is_chat(meta)) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({std::move(choice)});
  j["usage"] = usage_json(usage);
  return j;
}

json chunk_json(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason,
                bool first, const json& logprobs, int64_t index) {
  json j = header_json(meta, is_chat(meta) ? "chat.completion.chunk" : "text_completion");
  json choice = {
      {"index", index}, {"logprobs", logprobs}, {"finish_reason", finish_json(finish_reason)}};
  if (is_chat(meta)) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish_reason.empty())) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({std::move(choice)});
  return j;
}

json usage_chunk_json(const ResponseMeta& meta, const Usage& usage) {
  json j = header_json(meta, is_chat(meta) ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  return j;
}

std::string json_text(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(const json& j) {
  return "data: " + json_text(j) + "\n\n";
}

std::string sse_done() {
  return "data: [DONE]\n\n";
}

}  // namespace keel::serve
