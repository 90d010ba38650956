// Automatic prefix caching: the cache's own bookkeeping (longest prefix,
// LRU eviction within the budget), and through the engine a prompt that
// extends an earlier request gives the same greedy tokens as an engine
// without the cache, with log-probabilities within 1e-4 (the cached rows
// are bit-identical, but the rest of the prompt is prefilled as a shorter
// batch, and GEMM blocking may round a row's sums differently).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <future>
#include <mutex>

#include "serve/engine.h"
#include "serve/prefix_cache.h"
#include "test_engine_util.h"

using namespace keel;
using namespace keel::serve;

namespace {

// Rows hold their token id in every float, so a copy can be checked.
void fill(KvSequence& s, std::span<const int32_t> ids) {
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t t = 0; t < int64_t(ids.size()); ++t)
      for (int64_t d = 0; d < s.kv_dim(); ++d) {
        static_cast<float*>(s.keys(l))[t * s.kv_dim() + d] = float(ids[size_t(t)]);
        static_cast<float*>(s.values(l))[t * s.kv_dim() + d] = float(-ids[size_t(t)]);
      }
  s.set_length(int64_t(ids.size()));
}

CacheRowCopy copy_rows() {
  return [](KvSequence& dst, KvSequence& src, int64_t n) {
    for (int64_t l = 0; l < 2; ++l) {
      std::memcpy(dst.keys(l), src.keys(l), size_t(n * src.kv_dim()) * sizeof(float));
      std::memcpy(dst.values(l), src.values(l), size_t(n * src.kv_dim()) * sizeof(float));
    }
    dst.set_length(n);
  };
}

std::vector<int32_t> iota_ids(int32_t from, int64_t n) {
  std::vector<int32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(from + int32_t(i));
  return v;
}

TEST(PrefixCache, LongestPrefixAndLruWithinBudget) {
  KvCachePool sizes(2, 4, 1 << 20);
  // Room for 60 tokens of rows.
  PrefixCache cache(2, 4, sizes.bytes_for(60), nullptr, DType::F32, copy_rows());
  KvCachePool pool(2, 4, 1 << 20);
  auto src = pool.try_allocate(40);
  const auto a = iota_ids(100, 20);
  fill(*src, a);
  cache.insert(a, *src);
  EXPECT_EQ(cache.entries(), 1);
  auto b = a;
  b.resize(12);
  b.insert(b.end(), {7, 7, 7, 7, 7, 7, 7, 7});  // shares 12 tokens with a
  fill(*src, b);
  cache.insert(b, *src);
  EXPECT_EQ(cache.entries(), 2);

  auto q = a;
  q.push_back(5);
  PrefixCache::Match m = cache.find(q, int64_t(q.size()) - 1);
  ASSERT_TRUE(m.rows);
  EXPECT_EQ(m.length, 20);
  EXPECT_EQ(static_cast<float*>(m.rows->keys(1))[19 * 4], 119.0f);  // a's rows, not b's
  EXPECT_EQ(cache.find(q, 9).length, 9);                            // capped
  EXPECT_EQ(cache.find(std::vector<int32_t>{1, 2, 3}, 2).length, 0);

  // A sequence that extends a replaces it; one inside an entry adds nothing.
  auto a2 = a;
  a2.insert(a2.end(), {1, 2, 3, 4});
  fill(*src, a2);
  cache.insert(a2, *src);
  EXPECT_EQ(cache.entries(), 2);
  cache.insert(std::span<const int32_t>(a2).first(18), *src);
  EXPECT_EQ(cache.entries(), 2);
  EXPECT_EQ(cache.bytes_in_use(), sizes.bytes_for(24) + sizes.bytes_for(20));

  // A third sequence needs room: the least recently used (b) goes.
  const auto c = iota_ids(500, 30);
  fill(*src, c);
  cache.insert(c, *src);
  EXPECT_EQ(cache.entries(), 2);
  EXPECT_LE(cache.bytes_in_use(), cache.limit());
  EXPECT_EQ(cache.find(b, 19).length, 12);  // only a2's shared start is left
  EXPECT_EQ(cache.find(c, 29).length, 29);

  PrefixCache off(2, 4, 0, nullptr, DType::F32, copy_rows());
  EXPECT_FALSE(off.enabled());
  off.insert(a, *src);
  EXPECT_EQ(off.entries(), 0);
}

struct Result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  int64_t cached = 0;
};

Result run(Engine& eng, const std::vector<int32_t>& prompt, int64_t max_tokens) {
  Request r;
  r.prompt = prompt;
  r.sampling.temperature = 0;
  r.sampling.max_tokens = max_tokens;
  r.sampling.stop_at_eot = false;
  r.sampling.logprobs = 0;
  std::mutex mu;
  Result out;
  std::promise<void> done;
  eng.submit(r, [&](const Event& e) {
    std::lock_guard<std::mutex> lock(mu);
    out.tokens.insert(out.tokens.end(), e.tokens.begin(), e.tokens.end());
    for (const TokenLogprob& lp : e.logprobs) out.logprobs.push_back(lp.logprob);
    out.cached = e.cached_tokens;
    if (e.finish != FinishReason::None) done.set_value();
    return true;
  });
  EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  std::lock_guard<std::mutex> lock(mu);
  return out;
}

void expect_cache_changes_nothing(const std::string& dir, const std::string& quant) {
  EngineOptions o;
  o.threads = 2;
  o.quant = quant;
  auto plain = Engine::load(dir, o);
  o.prefix_cache_bytes = size_t(16) << 20;
  auto cached = Engine::load(dir, o);
  const int64_t V = plain->tokenizer().vocab_size();
  const auto first = serve::testing::some_ids(24, V, 5);
  auto second = first;  // the first prompt, then new tokens
  for (int32_t id : serve::testing::some_ids(8, V, 6)) second.push_back(id);

  const Result a = run(*cached, first, 6);
  EXPECT_EQ(a.cached, 0);
  const Result b = run(*cached, second, 8);
  const Result want = run(*plain, second, 8);
  EXPECT_EQ(b.cached, 24) << "the first prompt's rows are reused";
  EXPECT_EQ(want.cached, 0);
  EXPECT_EQ(b.tokens, want.tokens);
  ASSERT_EQ(b.logprobs.size(), want.logprobs.size());
  for (size_t i = 0; i < b.logprobs.size(); ++i)
    EXPECT_NEAR(b.logprobs[i], want.logprobs[i], 1e-4) << i;
  // The same prompt again: all but its last token come from the cache.
  EXPECT_EQ(run(*cached, second, 8).cached, int64_t(second.size()) - 1);
  const EngineStats st = cached->stats();
  EXPECT_EQ(st.prefix_cache_hits, 2);
  EXPECT_EQ(st.prefix_cache_tokens_reused, 24 + int64_t(second.size()) - 1);
  EXPECT_GT(st.prefix_cache_bytes_in_use, 0u);
  EXPECT_EQ(plain->stats().prefix_cache_hits, 0);
}

TEST(PrefixCacheEngine, Gpt2SameGreedyTokens) {
  expect_cache_changes_nothing(serve::testing::tiny_run("gpt2"), "none");
}
TEST(PrefixCacheEngine, LlamaSameGreedyTokens) {
  expect_cache_changes_nothing(serve::testing::tiny_run("llama"), "none");
}
TEST(PrefixCacheEngine, LlamaQ80SameGreedyTokens) {
  expect_cache_changes_nothing(serve::testing::tiny_run("llama"), "q8_0");
}

}  // namespace
