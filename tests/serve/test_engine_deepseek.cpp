// deepseek through the inference engine: prefill and batched decode over the
// latent KV cache equal the training forward Model::logits (ref and cpu, with
// and without a query latent, with non-zero routing biases); the engine's
// greedy output equals the training model's greedy generation from a saved
// run; the cache pool sizes a token from the latent width.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <future>
#include <mutex>

#include "backend/backend.h"
#include "core/rng.h"
#include "model/deepseek.h"
#include "model/model.h"
#include "serve/engine.h"
#include "serve/inference_model.h"
#include "serve/kv_cache.h"
#include "test_engine_util.h"

using namespace keel;
using namespace keel::serve;
using serve::testing::max_abs_diff;
using serve::testing::some_ids;

namespace {

model::ModelConfig ds_config(int64_t q_lora) {
  model::ModelConfig c;
  c.arch = "deepseek";
  c.vocab_size = 96;
  c.n_layer = 3;
  c.n_head = 4;
  c.n_embd = 64;
  c.max_seq_len = 32;
  c.q_lora_rank = q_lora;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 12;
  c.n_routed_experts = 6;
  c.n_shared_experts = 1;
  c.top_k = 2;
  c.moe_ffn_hidden = 24;
  c.n_dense_layers = 1;
  c.gating = "sigmoid";
  return c;
}

// Routing biases big enough to change the top-k choice of many tokens.
void randomize_biases(model::Model& m, uint64_t seed) {
  const Rng rng(seed, 2);
  uint64_t i = 0;
  for (auto& [name, t] : m.inference_buffers()) {
    float* b = t->data<float>();
    for (int64_t e = 0; e < t->numel(); ++e) b[e] = 0.1f * (float(rng.uniform(i++)) - 0.5f);
  }
}

store::ModelWeights weights_with_buffers(model::Model& m) {
  store::ModelWeights w = serve::testing::weights_of(m);
  for (auto& [name, t] : m.inference_buffers()) w.tensors[name] = *t;
  return w;
}

struct Case {
  std::string backend;
  int64_t q_lora;
};

class DeepSeekForward : public ::testing::TestWithParam<Case> {};

TEST_P(DeepSeekForward, PrefillAndDecodeMatchModelLogits) {
  const Case c = GetParam();
  auto be = backend::make_backend(c.backend);
  auto m = model::make_model(ds_config(c.q_lora), *be);
  m->init(11);
  randomize_biases(*m, 5);
  m->sync_compute_weights();
  InferenceModel im(weights_with_buffers(*m), *be, DType::F32);
  // Batched decode routes the sequences' tokens together.
  serve::testing::expect_inference_matches_logits(*m, im, 20, 5, {2, 7, 13});
}

INSTANTIATE_TEST_SUITE_P(All, DeepSeekForward,
                         ::testing::Values(Case{"ref", 0}, Case{"cpu", 0}, Case{"ref", 24},
                                           Case{"cpu", 24}),
                         [](const auto& info) {
                           return info.param.backend + "_qlora" + std::to_string(info.param.q_lora);
                         });

TEST(DeepSeekForward, RoutingBiasIsUsed) {
  // Zero biases route differently (the test's biases matter), and weights
  // that lack them are an error rather than served as if they were zero.
  auto be = backend::make_backend("ref");
  auto m = model::make_model(ds_config(0), *be);
  m->init(11);
  randomize_biases(*m, 5);
  store::ModelWeights w = weights_with_buffers(*m);
  const int64_t T = 12, V = m->config().vocab_size;
  const auto ids = some_ids(T, V, 4);
  const auto prefill = [&](const store::ModelWeights& mw) {
    InferenceModel im(mw, *be, DType::F32);
    KvCachePool pool(m->config().n_layer, im.kv_dim(), SIZE_MAX);
    auto s = pool.try_allocate(T);
    std::vector<float> out(size_t(T * V));
    im.prefill(*s, ids, out.data(), true);
    return out;
  };
  const std::vector<float> with = prefill(w);
  store::ModelWeights zero = w;
  for (auto& [name, t] : m->inference_buffers())
    zero.tensors[name] = Tensor::zeros(t->shape(), DType::F32);
  const std::vector<float> without = prefill(zero);
  EXPECT_GT(max_abs_diff(with.data(), without.data(), T * V), 1e-3f);
  w.tensors.erase("model.layers.1.mlp.gate.e_score_correction_bias");
  EXPECT_THROW(InferenceModel(w, *be, DType::F32), IoError);
}

TEST(DeepSeekCache, PoolSizesATokenFromTheLatentWidth) {
  auto be = backend::make_backend("ref");
  auto m = model::make_model(ds_config(0), *be);
  m->init(1);
  const auto& cfg = m->config();
  InferenceModel im(weights_with_buffers(*m), *be, DType::F32);
  const KvCachePool pool(cfg.n_layer, im.kv_dim(), SIZE_MAX);
  // (16 + 8) floats per token and layer, against 2 * 64 for multi-head attention.
  EXPECT_EQ(pool.bytes_for(1), size_t(cfg.n_layer * (16 + 8) * 4));
  EXPECT_EQ(int64_t(pool.bytes_for(1)), model::mla_cache_bytes_per_token(cfg, 4));
  EXPECT_LE(4 * model::mla_cache_bytes_per_token(cfg, 4), model::mha_cache_bytes_per_token(cfg, 4));
}

// A run directory with random weights and non-zero routing biases.
std::string deepseek_run() {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("keel_engine_deepseek_" + std::to_string(::getpid())) / "tiny";
  if (std::filesystem::exists(dir / store::kRunWeightsFile)) return dir.string();
  const data::Tokenizer tok = serve::testing::small_tokenizer();
  io::Config cfg = io::default_config();
  io::apply_overrides(
      cfg,
      {"model.arch=deepseek", "model.n_layer=3", "model.n_head=4", "model.n_embd=64",
       "model.max_seq_len=48", "model.kv_lora_rank=16", "model.qk_nope_head_dim=16",
       "model.qk_rope_head_dim=8", "model.v_head_dim=16", "model.n_routed_experts=6",
       "model.top_k=2", "model.moe_ffn_hidden=32", "train.seq_len=48", "run.dir=" + dir.string()});
  auto be = store::make_run_backend(cfg);
  auto m = model::make_model(store::run_model_config(cfg, tok.vocab_size()), *be);
  m->init(7);
  randomize_biases(*m, 9);
  m->sync_compute_weights();
  store::save_run(dir.string(), cfg, *m, tok, {{"val_loss", 0.0}});
  return dir.string();
}

TEST(DeepSeekEngine, GreedyMatchesTrainingGreedyGeneration) {
  const std::string dir = deepseek_run();
  auto run = store::load_run(dir, "ref");
  // The saved run carries the biases (they are not zero after loading).
  float babs = 0;
  for (auto& [name, t] : run.model->inference_buffers())
    for (float v : t->to_f32_vector()) babs = std::max(babs, std::fabs(v));
  EXPECT_GT(babs, 0.01f);
  EngineOptions o;
  o.backend = "ref";
  o.threads = 2;
  auto eng = Engine::load(dir, o);
  const std::vector<std::string> prompts = {"the union", "strong states make", "héllo"};
  struct Out {
    std::mutex mu;
    std::vector<int32_t> tokens;
    std::promise<void> done;
  };
  std::vector<std::unique_ptr<Out>> outs;
  for (const auto& p : prompts) {
    Request r;
    r.prompt = eng->tokenizer().encode(p);
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 10;
    r.sampling.stop_at_eot = false;
    outs.push_back(std::make_unique<Out>());
    Out* out = outs.back().get();
    eng->submit(r, [out](const Event& e) {
      std::lock_guard<std::mutex> lock(out->mu);
      out->tokens.insert(out->tokens.end(), e.tokens.begin(), e.tokens.end());
      if (e.finish != FinishReason::None) out->done.set_value();
      return true;
    });
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(outs[i]->done.get_future().wait_for(std::chrono::seconds(60)),
              std::future_status::ready);
    const auto want =
        serve::testing::full_recompute_greedy(*run.model, eng->tokenizer().encode(prompts[i]), 10);
    std::lock_guard<std::mutex> lock(outs[i]->mu);
    EXPECT_EQ(outs[i]->tokens, want) << prompts[i];
  }
}

}  // namespace

// The prefix cache copies DeepSeek's latent rows: a prompt extending an
// earlier request's gives the greedy tokens of an engine without the cache.
TEST(DeepSeekEngine, PrefixCacheGivesTheSameGreedyTokens) {
  const std::string dir = deepseek_run();
  EngineOptions o;
  o.threads = 2;
  auto plain = Engine::load(dir, o);
  o.prefix_cache_bytes = size_t(16) << 20;
  auto cached = Engine::load(dir, o);
  const int64_t V = plain->tokenizer().vocab_size();
  const auto first = serve::testing::some_ids(24, V, 5);
  auto second = first;
  for (int32_t id : serve::testing::some_ids(8, V, 6)) second.push_back(id);
  struct Out {
    std::mutex mu;
    std::vector<int32_t> tokens;
    int64_t cached = -1;
    std::promise<void> done;
  };
  auto run = [](Engine& e, const std::vector<int32_t>& prompt) {
    Request r;
    r.prompt = prompt;
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 8;
    r.sampling.stop_at_eot = false;
    auto out = std::make_shared<Out>();
    e.submit(r, [out](const Event& ev) {
      std::lock_guard<std::mutex> lock(out->mu);
      out->tokens.insert(out->tokens.end(), ev.tokens.begin(), ev.tokens.end());
      out->cached = ev.cached_tokens;
      if (ev.finish != FinishReason::None) out->done.set_value();
      return true;
    });
    EXPECT_EQ(out->done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
    std::lock_guard<std::mutex> lock(out->mu);
    return std::make_pair(out->tokens, out->cached);
  };
  run(*cached, first);
  const auto [hit_tokens, hit_cached] = run(*cached, second);
  const auto [want_tokens, want_cached] = run(*plain, second);
  EXPECT_EQ(hit_cached, 24);
  EXPECT_EQ(want_cached, 0);
  EXPECT_EQ(hit_tokens, want_tokens);
}
