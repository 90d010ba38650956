// deepseek properties that need no PyTorch: routing ties go to the smaller
// expert id, the balancing bias moves toward equal load and only at step end,
// a capacity limit drops slots, training with the bias update is bit-exact
// across two runs and across thread counts (with the routing jitter too), the
// jitter moves training choices only, and the cache sizes follow the config.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "model/deepseek.h"
#include "model/model.h"

namespace keel::model {
namespace {

ModelConfig small_cfg() {
  ModelConfig c;
  c.arch = "deepseek";
  c.vocab_size = 50;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.max_seq_len = 8;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.n_routed_experts = 4;
  c.top_k = 2;
  c.n_shared_experts = 1;
  c.moe_ffn_hidden = 8;
  c.bias_update_rate = 0.01f;
  return c;
}

Tensor batch(uint64_t seed, int64_t V) {
  std::vector<int32_t> v(16);
  Rng r(seed, 0);
  for (size_t i = 0; i < v.size(); ++i) v[i] = int32_t(r.below(i, uint64_t(V)));
  return Tensor::from_i32(v, Shape{2, 8});
}

TEST(DeepSeekRouting, TiesGoToTheSmallerExpertId) {
  for (const char* name : {"ref", "cpu"}) {
    auto be = backend::make_backend(name);
    backend::MoeRouteArgs a;
    a.N = 1;
    a.E = 6;
    a.K = 3;
    a.gating = backend::MoeGating::Sigmoid;
    std::vector<float> logits(6, 0.25f), bias(6, 0.f), scores(6), w(3);
    std::vector<int32_t> idx(3);
    be->moe_route_forward(a, logits.data(), bias.data(), scores.data(), idx.data(), w.data());
    EXPECT_EQ(idx, (std::vector<int32_t>{0, 1, 2})) << name;
    bias[4] = 0.5f;  // bias alone lifts expert 4 to the front; weights stay unbiased
    be->moe_route_forward(a, logits.data(), bias.data(), scores.data(), idx.data(), w.data());
    EXPECT_EQ(idx, (std::vector<int32_t>{4, 0, 1})) << name;
    EXPECT_FLOAT_EQ(w[0], 1.f / 3.f) << name;
  }
}

TEST(DeepSeekBalance, BiasMovesTowardEqualLoadAtStepEnd) {
  auto be = backend::make_backend("cpu");
  auto m = make_model(small_cfg(), *be);
  m->init(3);
  const Tensor ids = batch(1, 50);
  m->zero_grad();
  m->forward_backward(ids, ids, 1.f);
  // The rule is checked against the statistics the layer gathered; the load
  // itself against an independent count of the routing decisions.
  std::vector<std::vector<float>> load, integral_before;
  for (auto& [name, t] : m->state_buffers()) {
    if (name.ends_with("expert_load")) load.push_back(t->to_f32_vector());
    if (name.ends_with("balance_integral")) integral_before.push_back(t->to_f32_vector());
  }
  ASSERT_EQ(load.size(), 2u);
  // (4, E): load, score sum, squared score sum, load without the jitter (none here)
  ASSERT_EQ(load[0].size(), 4u * 4u);
  const std::vector<Tensor> routing = deepseek_last_routing(*m);
  ASSERT_EQ(routing.size(), 2u);
  for (size_t li = 0; li < 2; ++li) {
    std::vector<float> counted(4, 0.f);
    const int32_t* id = routing[li].data<int32_t>();
    for (int64_t i = 0; i < routing[li].numel(); ++i) counted[size_t(id[i])] += 1.f;
    for (size_t e = 0; e < 4; ++e) {
      EXPECT_EQ(load[li][e], counted[e]) << "layer " << li;
      EXPECT_EQ(load[li][12 + e], counted[e]) << "layer " << li;  // no jitter: the same choice
    }
  }
  float total = 0;
  for (size_t e = 0; e < 4; ++e) total += load[0][e];
  EXPECT_EQ(total, 16.f * 2.f);  // every token's top-2 counted once
  bool has_stats = false;
  for (auto& [k, v] : m->step_statistics())
    if (k == "expert_load_max_mean") has_stats = v >= 1.0;
  EXPECT_TRUE(has_stats);
  m->on_step_end(true);
  size_t li = 0;
  std::vector<std::vector<float>> bias_after;
  for (auto& [name, t] : m->state_buffers())
    if (name.ends_with("e_score_correction_bias")) bias_after.push_back(t->to_f32_vector());
  for (auto& [name, t] : m->state_buffers()) {
    if (!name.ends_with("balance_integral")) continue;
    const std::vector<float> c = t->to_f32_vector(), &l = load[li];
    const double mean = total / 4.0, tokens = total / 2.0;
    double mm = 0;
    for (size_t e = 0; e < 4; ++e) mm += l[4 + e] / tokens / 4.0;
    for (size_t e = 0; e < 4; ++e) {
      const double m1 = l[4 + e] / tokens, sd = std::sqrt(l[8 + e] / tokens - m1 * m1);
      const double gap = std::clamp((mean - l[e]) / mean, -1.0, 1.0);
      EXPECT_NEAR(c[e] - integral_before[li][e], 0.01 * sd * gap, 1e-6) << name << " " << e;
      // Underloaded experts gain on the integral, overloaded ones lose.
      if (l[e] < mean) {
        EXPECT_GT(c[e], integral_before[li][e]);
      }
      if (l[e] > mean) {
        EXPECT_LT(c[e], integral_before[li][e]);
      }
      EXPECT_NEAR(bias_after[li][e], c[e] - (m1 - mm), 1e-6) << name << " " << e;
    }
    ++li;
  }
  EXPECT_EQ(li, 2u);
  for (auto& [name, t] : m->state_buffers()) {
    if (!name.ends_with("expert_load")) continue;
    for (float x : t->to_f32_vector()) EXPECT_EQ(x, 0.f);
  }
}

TEST(DeepSeekBalance, CapacityDropsSlots) {
  ModelConfig c = small_cfg();
  c.capacity_factor = 0.5f;
  auto be = backend::make_backend("ref");
  auto m = make_model(c, *be);
  m->init(3);
  const Tensor ids = batch(2, 50);
  m->zero_grad();
  const float loss = m->forward_backward(ids, ids, 1.f);
  EXPECT_TRUE(std::isfinite(loss));
  double dropped = -1;
  for (auto& [k, v] : m->step_statistics())
    if (k == "dropped_tokens") dropped = v;
  // capacity ceil(0.5 * 16 * 2 / 4) = 4 per expert: at least half of 32 slots dropped per layer.
  EXPECT_GE(dropped, 2 * 16.0);
}

std::vector<float> train_and_dump(int threads, float router_noise = 0.f) {
  auto be = backend::make_backend("cpu");
  be->set_threads(threads);
  ModelConfig cfg = small_cfg();
  cfg.router_noise = router_noise;
  auto m = make_model(cfg, *be);
  m->init(5);
  for (int s = 0; s < 3; ++s) {
    m->zero_grad();
    const Tensor ids = batch(10 + uint64_t(s), 50);
    m->forward_backward(ids, ids, 1.f);
    for (nn::Parameter* p : m->parameters()) {  // plain SGD keeps the test independent of AdamW
      float* v = p->value.data<float>();
      const float* g = p->grad.data<float>();
      for (int64_t i = 0; i < p->numel(); ++i) v[i] -= 0.1f * g[i];
    }
    m->sync_compute_weights();
    m->on_step_end(true);
  }
  std::vector<float> out;
  for (nn::Parameter* p : m->parameters()) {
    const std::vector<float> v = p->value.to_f32_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  for (auto& [name, t] : m->state_buffers()) {
    const std::vector<float> v = t->to_f32_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

TEST(DeepSeekDeterminism, BitExactAcrossRunsAndThreads) {
  const std::vector<float> a = train_and_dump(1), b = train_and_dump(1), c = train_and_dump(2);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
  EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size() * 4), 0);
  // The routing jitter comes from each batch's tokens, not from a thread or a call count.
  const std::vector<float> d = train_and_dump(1, 0.3f), e = train_and_dump(2, 0.3f);
  ASSERT_EQ(d.size(), e.size());
  EXPECT_EQ(std::memcmp(d.data(), e.data(), d.size() * 4), 0);
  EXPECT_NE(std::memcmp(a.data(), d.data(), a.size() * 4), 0);
}

TEST(DeepSeekRouting, JitterMovesTrainingChoicesOnlyAndRepeats) {
  auto be = backend::make_backend("cpu");
  ModelConfig c = small_cfg();
  auto plain = make_model(c, *be);
  c.router_noise = 0.5f;
  auto jittered = make_model(c, *be);
  plain->init(7);
  jittered->init(7);
  const Tensor ids = batch(3, 50);
  const auto routing = [&](Model& m, bool train) {
    if (train) {
      m.zero_grad();
      m.forward_backward(ids, ids, 1.f);
    } else {
      m.loss(ids, ids);
    }
    std::vector<int32_t> out;
    for (const Tensor& t : deepseek_last_routing(m)) {
      const int32_t* p = t.data<int32_t>();
      out.insert(out.end(), p, p + t.numel());
    }
    return out;
  };
  const std::vector<int32_t> train_plain = routing(*plain, true),
                             train_jittered = routing(*jittered, true);
  ASSERT_EQ(train_plain.size(), train_jittered.size());
  size_t moved = 0;
  for (size_t i = 0; i < train_plain.size(); ++i) moved += train_plain[i] != train_jittered[i];
  EXPECT_GT(moved, 0u) << "a jitter of 0.5 on scores in (0, 1) moved no choice";
  // The step's load counts the jittered choice; the bias follows the plain one.
  size_t li = 0;
  for (auto& [name, t] : jittered->state_buffers()) {
    if (!name.ends_with("expert_load")) continue;
    const std::vector<float> l = t->to_f32_vector();
    std::vector<float> got(4, 0.f), plain_got(4, 0.f);
    for (size_t i = 0; i < 32; ++i) {
      got[size_t(train_jittered[li * 32 + i])] += 1.f;
      plain_got[size_t(train_plain[li * 32 + i])] += 1.f;
    }
    for (size_t e = 0; e < 4; ++e) {
      EXPECT_EQ(l[e], got[e]) << name;
      EXPECT_EQ(l[12 + e], plain_got[e]) << name;
    }
    ++li;
  }
  EXPECT_EQ(li, 2u);
  // The same batch again (a recomputed or resumed step) routes the same way.
  EXPECT_EQ(routing(*jittered, true), train_jittered);
  // Evaluation and inference route on the scores and the bias alone.
  EXPECT_EQ(routing(*jittered, false), routing(*plain, false));
  // The evaluation's load figure is the mean over passes and layers of each
  // pass's max/mean; this pass repeated the last one, so it is that pass's.
  jittered->take_eval_statistics();
  const std::vector<int32_t> eval_routing = routing(*jittered, false);
  double want = 0;
  for (size_t l = 0; l < 2; ++l) {
    std::vector<double> load(4, 0);
    for (size_t i = 0; i < 32; ++i) load[size_t(eval_routing[l * 32 + i])] += 1;
    want += *std::max_element(load.begin(), load.end()) / 8.0 / 2.0;
  }
  const auto stats = jittered->take_eval_statistics();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].first, "val_expert_load_max_mean");
  EXPECT_NEAR(stats[0].second, want, 1e-12);
  EXPECT_TRUE(jittered->take_eval_statistics().empty());  // taken
}

TEST(DeepSeekConfig, BadSettingsNameTheKey) {
  auto expect_error = [](ModelConfig c, const char* key) {
    try {
      resolve_config(c);
      ADD_FAILURE() << "no error for " << key;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  ModelConfig c = small_cfg();
  c.top_k = 5;
  expect_error(c, "model.top_k");
  c = small_cfg();
  c.kv_lora_rank = 17;
  expect_error(c, "model.kv_lora_rank");
  c = small_cfg();
  c.n_routed_experts = 0;
  expect_error(c, "model.n_routed_experts");
  c = small_cfg();
  c.qk_rope_head_dim = 3;
  expect_error(c, "model.qk_rope_head_dim");
}

TEST(DeepSeekCache, BytesPerTokenFollowTheConfig) {
  const ModelConfig c = resolve_config(small_cfg());
  EXPECT_EQ(mla_cache_bytes_per_token(c, 4), 2 * (8 + 4) * 4);
  EXPECT_EQ(mha_cache_bytes_per_token(c, 4), 2 * 2 * 16 * 4);
}

}  // namespace
}  // namespace keel::model
