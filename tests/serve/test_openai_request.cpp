// Request parsing and validation for the OpenAI endpoints: every bad input is
// an ApiError with the right status and the offending field in `param`;
// good input lands in the engine's sampling parameters unchanged.
#include <gtest/gtest.h>

#include <string>

#include "serve/openai_request.h"
#include "serve/openai_response.h"

namespace keel::serve {
namespace {

const RequestLimits kLimits{64, 384};

// Parses `body` and returns the ApiError it raises (fails the test if none).
ApiError error_of(Endpoint ep, const std::string& body) {
  try {
    parse_request(ep, body, kLimits);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << body;
  return ApiError(0, "", "", "", "");
}

void expect_error(const std::string& body, const std::string& param, const std::string& code,
                  Endpoint ep = Endpoint::Completions) {
  const ApiError e = error_of(ep, body);
  EXPECT_EQ(e.status(), 400) << body;
  EXPECT_EQ(e.type(), "invalid_request_error") << body;
  EXPECT_EQ(e.param(), param) << body << ": " << e.what();
  EXPECT_EQ(e.code(), code) << body << ": " << e.what();
}

TEST(OpenAiRequest, CompletionFieldsReachSampling) {
  const ParsedRequest p = parse_request(Endpoint::Completions,
                                        R"({"model":"tiny","prompt":"Hello","max_tokens":7,
        "temperature":0.5,"top_p":0.9,"top_k":40,"seed":123,"stop":["\n","END"],
        "repetition_penalty":1.2,"stream":true,"stream_options":{"include_usage":true}})",
                                        kLimits);
  EXPECT_EQ(p.model, "tiny");
  EXPECT_EQ(p.prompt_text, "Hello");
  EXPECT_FALSE(p.prompt_is_ids);
  ASSERT_TRUE(p.max_tokens.has_value());
  EXPECT_EQ(*p.max_tokens, 7);
  EXPECT_EQ(p.sampling.max_tokens, 7);
  EXPECT_DOUBLE_EQ(p.sampling.temperature, 0.5);
  EXPECT_DOUBLE_EQ(p.sampling.top_p, 0.9);
  EXPECT_EQ(p.sampling.top_k, 40);
  EXPECT_EQ(p.sampling.seed, 123u);
  EXPECT_EQ(p.sampling.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_DOUBLE_EQ(p.sampling.repetition_penalty, 1.2);
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
}

TEST(OpenAiRequest, DefaultsAndNulls) {
  const ParsedRequest p =
      parse_request(Endpoint::Completions,
                    R"({"model":"m","prompt":"x","temperature":null,"stop":null})", kLimits);
  EXPECT_FALSE(p.max_tokens.has_value());
  EXPECT_DOUBLE_EQ(p.sampling.temperature, 1.0);
  EXPECT_TRUE(p.sampling.stop.empty());
  EXPECT_FALSE(p.stream);
}

TEST(OpenAiRequest, TokenIdPromptAndSingleStringArray) {
  ParsedRequest p =
      parse_request(Endpoint::Completions, R"({"model":"m","prompt":[1,2,383]})", kLimits);
  EXPECT_TRUE(p.prompt_is_ids);
  EXPECT_EQ(p.prompt_ids, (std::vector<int32_t>{1, 2, 383}));
  p = parse_request(Endpoint::Completions, R"({"model":"m","prompt":["one"]})", kLimits);
  EXPECT_EQ(p.prompt_text, "one");
  expect_error(R"({"model":"m","prompt":[1,384]})", "prompt", "invalid_value");
  expect_error(R"({"model":"m","prompt":[-1]})", "prompt", "invalid_value");
  expect_error(R"({"model":"m","prompt":[1,"a"]})", "prompt", "invalid_type");
  expect_error(R"({"model":"m","prompt":["a","b"]})", "prompt", "unsupported_value");
  expect_error(R"({"model":"m","prompt":[]})", "prompt", "invalid_value");
}

TEST(OpenAiRequest, ChatMessages) {
  const ParsedRequest p = parse_request(Endpoint::ChatCompletions, R"({"model":"m","messages":[
      {"role":"system","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]},
      {"role":"developer","content":"x"}], "max_completion_tokens": 5})",
                                        kLimits);
  ASSERT_EQ(p.messages.size(), 3u);
  EXPECT_EQ(p.messages[0], (std::pair<std::string, std::string>{"system", "Be brief."}));
  EXPECT_EQ(p.messages[1], (std::pair<std::string, std::string>{"user", "Hi there"}));
  EXPECT_EQ(p.messages[2].first, "system");
  EXPECT_EQ(p.sampling.max_tokens, 5);
  const Endpoint chat = Endpoint::ChatCompletions;
  expect_error(R"({"model":"m"})", "messages", "missing_required_parameter", chat);
  expect_error(R"({"model":"m","messages":[]})", "messages", "invalid_value", chat);
  expect_error(R"({"model":"m","messages":"hi"})", "messages", "invalid_type", chat);
  expect_error(R"({"model":"m","messages":[{"role":"robot","content":"x"}]})", "messages[0].role",
               "invalid_value", chat);
  expect_error(R"({"model":"m","messages":[{"role":"user"}]})", "messages[0].content",
               "missing_required_parameter", chat);
  expect_error(R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content",
               "invalid_type", chat);
  expect_error(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
               "messages[0].content[0]", "unsupported_value", chat);
}

TEST(OpenAiRequest, MalformedBodies) {
  expect_error("", "", "invalid_json");
  expect_error("{", "", "invalid_json");
  expect_error(R"({"model":"m","prompt":"x",})", "", "invalid_json");
  expect_error("[1,2]", "", "invalid_json");
  expect_error("\"just a string\"", "", "invalid_json");
  expect_error(std::string("{\"model\":\"m\",\"prompt\":\"\xff\xfe\"}"), "", "invalid_utf8");
  // A lone surrogate escape is not a character either.
  expect_error(R"({"model":"m","prompt":"\ud800"})", "", "invalid_json");
}

TEST(OpenAiRequest, WrongTypes) {
  expect_error(R"({"prompt":"x"})", "model", "missing_required_parameter");
  expect_error(R"({"model":5,"prompt":"x"})", "model", "invalid_type");
  expect_error(R"({"model":"m"})", "prompt", "missing_required_parameter");
  expect_error(R"({"model":"m","prompt":{"a":1}})", "prompt", "invalid_type");
  expect_error(R"({"model":"m","prompt":"x","max_tokens":"10"})", "max_tokens", "invalid_type");
  expect_error(R"({"model":"m","prompt":"x","max_tokens":10.5})", "max_tokens", "invalid_type");
  expect_error(R"({"model":"m","prompt":"x","temperature":"hot"})", "temperature", "invalid_type");
  expect_error(R"({"model":"m","prompt":"x","stream":"yes"})", "stream", "invalid_type");
  expect_error(R"({"model":"m","prompt":"x","stop":[1]})", "stop", "invalid_type");
  expect_error(R"({"model":"m","prompt":"x","seed":"1"})", "seed", "invalid_type");
  expect_error(R"({"model":"m","prompt":"x","top_k":1.5})", "top_k", "invalid_type");
}

TEST(OpenAiRequest, OutOfRangeValues) {
  expect_error(R"({"model":"m","prompt":"x","max_tokens":0})", "max_tokens", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","max_tokens":-3})", "max_tokens", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","max_tokens":65})", "max_tokens",
               "context_length_exceeded");
  expect_error(R"({"model":"m","prompt":"x","max_tokens":99999999999999999999})", "max_tokens",
               "invalid_type");  // beyond uint64: a float in JSON
  expect_error(R"({"model":"m","prompt":"x","max_tokens":18446744073709551615})", "max_tokens",
               "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","temperature":2.5})", "temperature", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","temperature":-0.1})", "temperature", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","top_p":0})", "top_p", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","top_k":-1})", "top_k", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","repetition_penalty":0})", "repetition_penalty",
               "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","stop":["a","b","c","d","e"]})", "stop",
               "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","stop":""})", "stop", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","stream_options":{"include_usage":true}})",
               "stream_options", "invalid_value");
}

TEST(OpenAiRequest, UnsupportedFeaturesAreRefused) {
  expect_error(R"({"model":"m","prompt":"x","n":17})", "n", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","response_format":{"type":"json_schema",)"
               R"("json_schema":{"name":"x","schema":{"type":"string","format":"date"}}}})",
               "response_format", "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","response_format":{"type":"yaml"}})", "response_format",
               "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","echo":true})", "echo", "unsupported_value");
  expect_error(R"({"model":"m","prompt":"x","logprobs":6})", "logprobs", "invalid_value");
  expect_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2})",
               "top_logprobs", "invalid_value", Endpoint::ChatCompletions);
  expect_error(R"({"model":"m","prompt":"x","presence_penalty":2.5})", "presence_penalty",
               "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","frequency_penalty":-3})", "frequency_penalty",
               "invalid_value");
  expect_error(R"({"model":"m","prompt":"x","temperature":1e309})", "temperature", "invalid_value");
  expect_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]})", "tools",
               "unsupported_value", Endpoint::ChatCompletions);
  // Their "off" values and unknown extras pass.
  EXPECT_NO_THROW(parse_request(
      Endpoint::Completions,
      R"({"model":"m","prompt":"x","n":1,"echo":false,"logprobs":null,"presence_penalty":0,"user":"u","x_extra":1})",
      kLimits));
  const ParsedRequest p = parse_request(
      Endpoint::Completions,
      R"({"model":"m","prompt":"x","presence_penalty":0.5,"frequency_penalty":-1.25})", kLimits);
  EXPECT_EQ(p.sampling.presence_penalty, 0.5);
  EXPECT_EQ(p.sampling.frequency_penalty, -1.25);
  EXPECT_FALSE(p.seed_given);
  EXPECT_EQ(p.sampling.logprobs, -1);
  EXPECT_EQ(
      parse_request(Endpoint::Completions, R"({"model":"m","prompt":"x","logprobs":3})", kLimits)
          .sampling.logprobs,
      3);
  EXPECT_EQ(parse_request(Endpoint::ChatCompletions,
                          R"({"model":"m","messages":[{"role":"user","content":"x"}],)"
                          R"("logprobs":true,"top_logprobs":4})",
                          kLimits)
                .sampling.logprobs,
            4);
}

TEST(OpenAiRequest, Utf8Validator) {
  EXPECT_EQ(find_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("ab\x80"), 2u);            // stray continuation byte
  EXPECT_EQ(find_invalid_utf8("\xc0\xaf"), 0u);          // overlong '/'
  EXPECT_EQ(find_invalid_utf8("x\xe0\x80\xaf"), 1u);     // overlong 3-byte
  EXPECT_EQ(find_invalid_utf8("\xed\xa0\x80"), 0u);      // UTF-16 surrogate
  EXPECT_EQ(find_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("ok\xe2\x82"), 2u);        // truncated at the end
}

TEST(OpenAiResponse, ShapesFollowOpenAi) {
  ResponseMeta meta{Endpoint::Completions, new_response_id(Endpoint::Completions), 1700000000,
                    "tiny"};
  EXPECT_EQ(meta.id.rfind("cmpl-", 0), 0u);
  EXPECT_NE(meta.id, new_response_id(Endpoint::Completions));
  nlohmann::json j = completion_json(meta, "hi", "length", {3, 2});
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "hi");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["total_tokens"], 5);
  meta.endpoint = Endpoint::ChatCompletions;
  j = completion_json(meta, "yo", "stop", {1, 1});
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "yo");
  j = chunk_json(meta, "", "", true);
  EXPECT_EQ(j["object"], "chat.completion.chunk");
  EXPECT_EQ(j["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(j["choices"][0]["finish_reason"].is_null());
  j = chunk_json(meta, "", "stop", false);
  EXPECT_TRUE(j["choices"][0]["delta"].empty());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  j = usage_chunk_json(meta, {4, 6});
  EXPECT_TRUE(j["choices"].empty());
  EXPECT_EQ(j["usage"]["total_tokens"], 10);
  // Invalid UTF-8 from the model becomes U+FFFD instead of an exception.
  const std::string ev = sse_event(chunk_json(meta, "a\xff", "", false));
  EXPECT_EQ(ev.rfind("data: {", 0), 0u);
  EXPECT_EQ(ev.substr(ev.size() - 2), "\n\n");
  EXPECT_NE(ev.find("a\xef\xbf\xbd"), std::string::npos);
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
}

TEST(OpenAiError, ObjectShape) {
  const nlohmann::json j =
      api_error_json(ApiError(404, "invalid_request_error", "model", "model_not_found", "no"));
  EXPECT_EQ(j["error"]["message"], "no");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  const nlohmann::json k = api_error_json(ApiError(500, "server_error", "", "", "x"));
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

}  // namespace
}  // namespace keel::serve
