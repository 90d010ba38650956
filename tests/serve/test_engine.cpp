// The Engine through its public interface: greedy output equals the
// training model's greedy generation, seeds reproduce, requests are checked
// field by field, a full cache refuses, cancel and shutdown end requests.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "core/error.h"
#include "serve/engine.h"
#include "serve/text_stream.h"
#include "test_engine_util.h"

using namespace keel;
using namespace keel::serve;

namespace {

// Collects a request's events; wait() returns when the last one arrived.
struct Collector {
  std::mutex mu;
  std::vector<Event> events;
  std::promise<void> done;
  std::atomic<int> stop_after{-1};  // return false from this event on

  EventFn fn() {
    return [this](const Event& e) {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(e);
      if (e.finish != FinishReason::None) done.set_value();
      return stop_after < 0 || int(events.size()) < stop_after;
    };
  }
  void wait() {
    ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  }
  std::vector<int32_t> tokens() {
    std::vector<int32_t> t;
    for (const auto& e : events) t.insert(t.end(), e.tokens.begin(), e.tokens.end());
    return t;
  }
  std::string text() {
    std::string s;
    for (const auto& e : events) s += e.text;
    return s;
  }
  FinishReason finish() { return events.empty() ? FinishReason::None : events.back().finish; }
};

std::unique_ptr<Engine> load(const std::string& arch, EngineOptions o = {}) {
  if (o.threads == 0) o.threads = 2;
  return Engine::load(serve::testing::tiny_run(arch), o);
}

class EngineGreedy : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineGreedy, MatchesTrainingGreedyGeneration) {
  const std::string arch = GetParam();
  auto run = store::load_run(serve::testing::tiny_run(arch), "ref");
  EngineOptions o;
  o.backend = "ref";
  auto eng = load(arch, o);
  EXPECT_EQ(eng->model_id(), "tiny");
  EXPECT_EQ(eng->context_length(), 48);
  const std::vector<std::string> prompts = {"the union", "strong states make", "héllo"};
  std::vector<std::unique_ptr<Collector>> cs;
  // All submitted at once: they share decode steps (batched), and each must
  // still produce exactly what it produces alone.
  for (const auto& p : prompts) {
    Request r;
    r.prompt = eng->tokenizer().encode(p);
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 12;
    r.sampling.stop_at_eot = false;
    cs.push_back(std::make_unique<Collector>());
    eng->submit(r, cs.back()->fn());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    cs[i]->wait();
    const auto want =
        serve::testing::full_recompute_greedy(*run.model, eng->tokenizer().encode(prompts[i]), 12);
    EXPECT_EQ(cs[i]->tokens(), want) << prompts[i];
    EXPECT_EQ(cs[i]->finish(), FinishReason::Length);
    EXPECT_EQ(cs[i]->events.back().completion_tokens, 12);
    // Random weights emit arbitrary bytes: the stream replaces invalid UTF-8.
    EXPECT_EQ(cs[i]->text(), utf8_sanitize(eng->tokenizer().decode(want)));
  }
  const EngineStats st = eng->stats();
  EXPECT_EQ(st.requests_total, 3);
  EXPECT_EQ(st.completion_tokens_total, 36);
  EXPECT_EQ(st.cache_bytes_in_use, 0u);
}

INSTANTIATE_TEST_SUITE_P(Arch, EngineGreedy, ::testing::Values("gpt2", "llama"));

TEST(Engine, SameSeedSameTextWhateverElseRuns) {
  auto eng = load("llama");
  Request r;
  r.prompt = eng->tokenizer().encode("the state");
  r.sampling.temperature = 1.0;
  r.sampling.top_k = 20;
  r.sampling.top_p = 0.9;
  r.sampling.repetition_penalty = 1.3;
  r.sampling.max_tokens = 15;
  r.sampling.stop_at_eot = false;
  r.sampling.seed = 42;
  Collector a;
  eng->submit(r, a.fn());
  a.wait();
  // Again, this time next to two other requests.
  Collector b, x, y;
  Request other = r;
  other.sampling.seed = 7;
  eng->submit(other, x.fn());
  eng->submit(r, b.fn());
  eng->submit(other, y.fn());
  b.wait();
  x.wait();
  y.wait();
  EXPECT_EQ(a.tokens(), b.tokens());
  EXPECT_EQ(x.tokens(), y.tokens());
  EXPECT_NE(a.tokens(), x.tokens());  // a different seed samples differently
}

TEST(Engine, BadRequestsNameTheField) {
  auto eng = load("gpt2");
  const auto expect_field = [&](Request r, const std::string& field) {
    try {
      eng->submit(r, [](const Event&) { return true; });
      ADD_FAILURE() << "accepted a bad " << field;
    } catch (const RequestError& e) {
      EXPECT_EQ(e.field(), field) << e.what();
    }
  };
  Request ok;
  ok.prompt = {1, 2, 3};
  Request r = ok;
  r.prompt = {};
  expect_field(r, "prompt");
  r.prompt = std::vector<int32_t>(48, 1);  // the context is 48: no room to generate
  expect_field(r, "prompt");
  r.prompt = {1, 100000};
  expect_field(r, "prompt");
  r = ok;
  r.sampling.max_tokens = 0;
  expect_field(r, "max_tokens");
  r = ok;
  r.sampling.temperature = -1;
  expect_field(r, "temperature");
  r = ok;
  r.sampling.top_p = 0;
  expect_field(r, "top_p");
  r = ok;
  r.sampling.top_k = -2;
  expect_field(r, "top_k");
  r = ok;
  r.sampling.repetition_penalty = 0;
  expect_field(r, "repetition_penalty");
  r = ok;
  r.sampling.stop = {"ok", ""};
  expect_field(r, "stop");
  // NaN and out of [-2, 2] (the command line's range check let a NaN by).
  for (double v : {std::nan(""), 2.5, -3.0}) {
    r = ok;
    r.sampling.presence_penalty = v;
    expect_field(r, "presence_penalty");
    r = ok;
    r.sampling.frequency_penalty = v;
    expect_field(r, "frequency_penalty");
  }
  r = ok;
  r.sampling.temperature = std::nan("");
  expect_field(r, "temperature");
}

TEST(Engine, FullCacheRefusesThenRecovers) {
  EngineOptions o;
  // Room for one sequence of 40 positions (2 layers, kv 64 floats, k and v).
  o.max_cache_bytes = 2 * 2 * 40 * 64 * sizeof(float);
  auto eng = load("gpt2", o);
  Request r;
  r.prompt = {5, 6, 7};
  r.sampling.max_tokens = 37;
  r.sampling.stop_at_eot = false;
  Collector a;
  eng->submit(r, a.fn());
  EXPECT_THROW(eng->submit(r, [](const Event&) { return true; }), CapacityError);
  a.wait();
  EXPECT_EQ(a.tokens().size(), 37u);
  // Freed: the same request fits again.
  Collector b;
  eng->submit(r, b.fn());
  b.wait();
  EXPECT_EQ(b.finish(), FinishReason::Length);
  // More than the whole cache can ever hold is the request's fault.
  o.max_cache_bytes = 1000;
  auto small = load("gpt2", o);
  try {
    small->submit(r, [](const Event&) { return true; });
    ADD_FAILURE() << "accepted";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.field(), "max_tokens");
  }
}

TEST(Engine, CancelAndCallbackFalseEndWithCancelled) {
  auto eng = load("gpt2");
  Request r;
  r.prompt = {5, 6, 7};
  r.sampling.max_tokens = 40;
  r.sampling.stop_at_eot = false;
  Collector a;
  a.stop_after = 3;  // the client goes away after three events
  eng->submit(r, a.fn());
  a.wait();
  EXPECT_EQ(a.finish(), FinishReason::Cancelled);
  EXPECT_LT(a.tokens().size(), 40u);

  // cancel() of a running or queued request. The tiny model could otherwise
  // write all 40 tokens while this thread waits for a core between submit
  // and cancel: its first event is held until the cancel is in.
  Collector b;
  std::promise<void> cancel_sent;
  std::shared_future<void> sent = cancel_sent.get_future().share();
  const uint64_t id = eng->submit(r, [fn = b.fn(), sent](const Event& e) {
    sent.wait_for(std::chrono::seconds(60));
    return fn(e);
  });
  eng->cancel(id);
  cancel_sent.set_value();
  b.wait();
  EXPECT_EQ(b.finish(), FinishReason::Cancelled);
  EXPECT_EQ(eng->stats().cache_bytes_in_use, 0u);
}

TEST(Engine, ShutdownFinishCompletesAndAbortCancels) {
  EngineOptions o;
  o.max_batch = 1;  // the second request waits in the queue
  auto eng = load("gpt2", o);
  Request r;
  r.prompt = {5, 6, 7};
  r.sampling.max_tokens = 20;
  r.sampling.stop_at_eot = false;
  Collector a, b;
  eng->submit(r, a.fn());
  eng->submit(r, b.fn());
  eng->shutdown(true);
  EXPECT_EQ(a.finish(), FinishReason::Length);
  EXPECT_EQ(b.finish(), FinishReason::Length);
  EXPECT_THROW(eng->submit(r, [](const Event&) { return true; }), CapacityError);
  eng->shutdown(true);  // idempotent

  auto eng2 = load("gpt2", o);
  r.sampling.max_tokens = 45;
  Collector c, d;
  eng2->submit(r, c.fn());
  eng2->submit(r, d.fn());
  eng2->shutdown(false);
  EXPECT_EQ(d.finish(), FinishReason::Cancelled);  // never started
  EXPECT_NE(c.finish(), FinishReason::None);
}

// Every request waits in the queue until a batch admits it, so a queue (or
// a batch) below 1 would answer every request "full": refused at load,
// naming the option; a queue of 1 serves.
TEST(Engine, RefusesAQueueOrBatchBelowOne) {
  for (int64_t q : {0, -1}) {
    EngineOptions o;
    o.max_queue = q;
    try {
      load("gpt2", o);
      ADD_FAILURE() << "max_queue " << q << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("max_queue: must be >= 1"), std::string::npos)
          << e.what();
    }
  }
  EngineOptions o;
  o.max_batch = 0;
  EXPECT_THROW(load("gpt2", o), ConfigError);
  o.max_batch = 1;
  o.max_queue = 1;
  auto eng = load("gpt2", o);
  Request r;
  r.prompt = {5, 6, 7};
  r.sampling.max_tokens = 4;
  r.sampling.stop_at_eot = false;
  Collector a;
  eng->submit(r, a.fn());
  a.wait();
  EXPECT_EQ(a.finish(), FinishReason::Length);
}

TEST(Engine, StopStringEndsTheOutputWithoutIt) {
  auto eng = load("gpt2");
  Request r;
  r.prompt = eng->tokenizer().encode("the union");
  r.sampling.temperature = 0;
  r.sampling.max_tokens = 20;
  r.sampling.stop_at_eot = false;
  Collector a;
  eng->submit(r, a.fn());
  a.wait();
  const std::string full = a.text();
  ASSERT_GE(full.size(), 4u);
  // Stop at a piece of the greedy text: the output is what came before it.
  size_t at = full.size() / 2;
  const auto ascii = [&](size_t i) { return static_cast<unsigned char>(full[i]) < 0x80; };
  while (at + 3 <= full.size() && !(ascii(at) && ascii(at + 1) && ascii(at + 2))) ++at;
  if (at + 3 > full.size()) GTEST_SKIP() << "no ASCII piece in the greedy text";
  const std::string stop = full.substr(at, 3);
  r.sampling.stop = {stop};
  Collector b;
  eng->submit(r, b.fn());
  b.wait();
  EXPECT_EQ(b.finish(), FinishReason::Stop);
  EXPECT_EQ(b.text(), full.substr(0, full.find(stop)));
}

TEST(Engine, ChatTemplateAndBadPath) {
  auto eng = load("gpt2");
  EXPECT_EQ(eng->render_chat({{"system", "Be brief."}, {"user", "Hi"}}),
            "System: Be brief.\n\nUser: Hi\n\nAssistant:");
  EXPECT_THROW(Engine::load("/nonexistent/model", {}), IoError);
}

}  // namespace
