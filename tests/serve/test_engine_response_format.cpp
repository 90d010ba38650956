// response_format through the engine: a random-weights model, greedy and
// sampled with several seeds, only ever writes JSON that parses (read here
// with nlohmann's parser, not keel's grammar) and matches the schema, and
// the request stops with Stop the moment the value is complete.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <mutex>

#include <nlohmann/json.hpp>

#include "serve/engine.h"
#include "serve/json_schema.h"
#include "test_engine_util.h"

using namespace keel;
using namespace keel::serve;

namespace {

struct Out {
  std::mutex mu;
  std::string text;
  FinishReason finish = FinishReason::None;
  int64_t tokens = 0;
  std::promise<void> done;
};

std::shared_ptr<Out> run(Engine& e, const std::string& prompt, SamplingParams sp) {
  Request r;
  r.prompt = e.tokenizer().encode(prompt);
  r.sampling = std::move(sp);
  auto out = std::make_shared<Out>();
  e.submit(r, [out](const Event& ev) {
    std::lock_guard<std::mutex> lock(out->mu);
    out->text += ev.text;
    out->tokens = ev.completion_tokens;
    if (ev.finish != FinishReason::None) {
      out->finish = ev.finish;
      out->done.set_value();
    }
    return true;
  });
  EXPECT_EQ(out->done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  return out;
}

TEST(EngineResponseFormat, RandomModelWritesMatchingJson) {
  EngineOptions o;
  o.threads = 2;
  auto eng = Engine::load(serve::testing::tiny_run("gpt2"), o);
  const auto schema = compile_json_schema(nlohmann::json::parse(R"({
    "type": "object", "additionalProperties": false, "required": ["ok", "n"],
    "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 22, 333]},
                   "tag": {"type": ["string", "null"], "maxLength": 3}}})"));
  for (uint64_t seed : {0, 1, 2, 3, 4, 5}) {
    SamplingParams sp;
    sp.temperature = seed == 0 ? 0.0 : 1.0;
    sp.seed = seed;
    sp.max_tokens = 40;
    sp.response_format = schema;
    const auto out = run(*eng, "the union", sp);
    SCOPED_TRACE(out->text);
    ASSERT_EQ(out->finish, FinishReason::Stop);
    const nlohmann::json v = nlohmann::json::parse(out->text);  // throws if not JSON
    ASSERT_TRUE(v.is_object());
    EXPECT_TRUE(v.at("ok").is_boolean());
    const int64_t n = v.at("n").get<int64_t>();
    EXPECT_TRUE(n == 1 || n == 22 || n == 333);
    for (const auto& [k, x] : v.items()) {
      EXPECT_TRUE(k == "ok" || k == "n" || k == "tag") << k;
      if (k != "tag" || x.is_null()) continue;
      ASSERT_TRUE(x.is_string());
      size_t chars = 0;  // UTF-8 lead bytes
      for (const unsigned char c : x.get<std::string>()) chars += (c & 0xC0) != 0x80;
      EXPECT_LE(chars, 3u);
    }
  }
  // json_object: any object; whatever the model picks, every prefix it
  // wrote is one the grammar allowed, so a finished one parses.
  SamplingParams sp;
  sp.temperature = 0;
  sp.max_tokens = 40;
  sp.response_format = json_object_graph();
  const auto out = run(*eng, "the union", sp);
  if (out->finish == FinishReason::Stop) {
    EXPECT_TRUE(nlohmann::json::parse(out->text).is_object());
  }
  ASSERT_FALSE(out->text.empty());
  EXPECT_EQ(out->text[out->text.find_first_not_of(" \t\n\r")], '{') << out->text;
}

}  // namespace
