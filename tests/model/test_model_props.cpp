// Model properties that need no PyTorch: config validation, parameter names
// and shapes, deterministic per-parameter init, recomputation and thread count
// not changing gradients, gradient scaling and accumulation, forward-only paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "model/model.h"

namespace keel::model {
namespace {

ModelConfig tiny(const std::string& arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 64;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == "llama" ? 2 : 0;
  c.n_embd = 32;
  c.max_seq_len = 16;
  return c;
}

std::pair<Tensor, Tensor> batch(int64_t B, int64_t T, int64_t V) {
  std::vector<int32_t> ids(size_t(B * T)), tg(size_t(B * T));
  Rng r(3, 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = int32_t(r.below(2 * i, uint64_t(V)));
    tg[i] = int32_t(r.below(2 * i + 1, uint64_t(V)));
  }
  return {Tensor::from_i32(ids, Shape{B, T}), Tensor::from_i32(tg, Shape{B, T})};
}

std::map<std::string, nn::Parameter*> by_name(Model& m) {
  std::map<std::string, nn::Parameter*> r;
  for (nn::Parameter* p : m.parameters()) r[p->name] = p;
  return r;
}

void expect_config_error(ModelConfig c, const std::string& field) {
  auto be = backend::make_backend("ref");
  try {
    make_model(c, *be);
    ADD_FAILURE() << "no ConfigError for " << field;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, InvalidSizesNameTheField) {
  ModelConfig c = tiny("gpt2");
  c.n_embd = 30;
  expect_config_error(c, "n_embd");
  c = tiny("llama");
  c.n_kv_head = 3;
  expect_config_error(c, "n_kv_head");
  c = tiny("llama");
  c.n_embd = 36;  // head size 9: odd, no rotary pairs
  expect_config_error(c, "head size");
  c = tiny("gpt2");
  c.n_kv_head = 2;
  expect_config_error(c, "n_kv_head");
  c = tiny("gpt2");
  c.vocab_size = 0;
  expect_config_error(c, "vocab_size");
  c = tiny("gpt2");
  c.arch = "gpt5";
  expect_config_error(c, "arch");
  c = tiny("gpt2");
  c.compute_dtype = DType::I32;
  expect_config_error(c, "compute_dtype");
}

TEST(ModelConfig, DefaultsAreFilledIn) {
  const ModelConfig g = resolve_config(tiny("gpt2"));
  EXPECT_EQ(g.n_kv_head, 4);
  EXPECT_EQ(g.ffn_hidden, 128);
  const ModelConfig l = resolve_config(tiny("llama"));
  EXPECT_EQ(l.ffn_hidden, 128);  // 8/3 * 32 = 85.3, rounded up to a multiple of 64
}

TEST(Gpt2, NamesShapesCountAndInit) {
  auto be = backend::make_backend("ref");
  auto m = make_model(tiny("gpt2"), *be);
  m->init(11);
  auto p = by_name(*m);
  ASSERT_EQ(p.size(), 2u + 2 * 12 + 2);
  EXPECT_EQ(m->parameters().front()->name, "wte.weight");
  EXPECT_EQ(p.at("h.1.attn.c_attn.weight")->value.shape(), (Shape{96, 32}));
  EXPECT_EQ(p.at("h.0.mlp.c_fc.weight")->value.shape(), (Shape{128, 32}));
  EXPECT_EQ(p.at("wpe.weight")->value.shape(), (Shape{16, 32}));
  const int64_t C = 32, L = 2, F = 128;
  const int64_t per_layer = 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (F * C + F) + (C * F + C);
  EXPECT_EQ(m->num_parameters(), 64 * C + 16 * C + L * per_layer + 2 * C);
  EXPECT_FALSE(p.at("h.0.ln_1.weight")->decay);
  EXPECT_FALSE(p.at("h.0.attn.c_attn.bias")->decay);
  EXPECT_TRUE(p.at("h.0.attn.c_attn.weight")->decay);
  for (float x : p.at("h.0.ln_2.weight")->value.to_f32_vector()) ASSERT_EQ(x, 1.f);
  for (float x : p.at("h.1.mlp.c_fc.bias")->value.to_f32_vector()) ASSERT_EQ(x, 0.f);
  auto stddev = [](const std::vector<float>& v) {
    double s = 0;
    for (float x : v) s += double(x) * x;
    return std::sqrt(s / double(v.size()));
  };
  EXPECT_NEAR(stddev(p.at("wte.weight")->value.to_f32_vector()), 0.02, 0.002);
  EXPECT_NEAR(stddev(p.at("h.0.mlp.c_proj.weight")->value.to_f32_vector()), 0.02 / 2.0, 0.001);
  // 6 * matmul weights (tied head counted once as the LM head) + 12 * L * C * T.
  EXPECT_DOUBLE_EQ(m->flops_per_token(8),
                   6.0 * double(L * (4 * C * C + 2 * C * F) + 64 * C) + 12.0 * L * C * 8);
}

TEST(Llama, NamesAndShapes) {
  auto be = backend::make_backend("ref");
  auto m = make_model(tiny("llama"), *be);
  auto p = by_name(*m);
  EXPECT_EQ(p.at("model.layers.1.self_attn.q_proj.weight")->value.shape(), (Shape{32, 32}));
  EXPECT_EQ(p.at("model.layers.1.self_attn.k_proj.weight")->value.shape(), (Shape{16, 32}));
  EXPECT_EQ(p.at("model.layers.0.mlp.gate_proj.weight")->value.shape(), (Shape{128, 32}));
  EXPECT_EQ(p.at("lm_head.weight")->value.shape(), (Shape{64, 32}));
  EXPECT_EQ(p.at("model.norm.weight")->value.shape(), (Shape{32}));
  EXPECT_EQ(p.count("model.layers.0.self_attn.q_proj.bias"), 0u);
}

TEST(Init, DeterministicPerParameterStreams) {
  auto be = backend::make_backend("ref");
  ModelConfig c2 = tiny("gpt2"), c3 = tiny("gpt2");
  c3.n_layer = 3;
  auto a = make_model(c2, *be), b = make_model(c2, *be), d = make_model(c3, *be);
  a->init(5);
  b->init(5);
  d->init(5);
  auto pa = by_name(*a), pb = by_name(*b), pd = by_name(*d);
  for (auto& [name, p] : pa)
    EXPECT_EQ(p->value.to_f32_vector(), pb.at(name)->value.to_f32_vector()) << name;
  // Same name and std in a deeper model: same values, whatever else exists.
  EXPECT_EQ(pa.at("h.1.attn.c_attn.weight")->value.to_f32_vector(),
            pd.at("h.1.attn.c_attn.weight")->value.to_f32_vector());
  EXPECT_NE(pa.at("h.0.attn.c_attn.weight")->value.to_f32_vector(),
            pa.at("h.1.attn.c_attn.weight")->value.to_f32_vector());
  b->init(6);
  EXPECT_NE(pa.at("wte.weight")->value.to_f32_vector(),
            by_name(*b).at("wte.weight")->value.to_f32_vector());
}

std::vector<std::vector<float>> grads_of(Model& m) {
  std::vector<std::vector<float>> g;
  for (nn::Parameter* p : m.parameters()) g.push_back(p->grad.to_f32_vector());
  return g;
}

class EachArch : public ::testing::TestWithParam<std::string> {};

TEST_P(EachArch, RecomputeAndThreadCountGiveIdenticalGradients) {
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<std::vector<std::vector<float>>> runs;
    std::vector<float> losses;
    for (int variant = 0; variant < 3; ++variant) {
      auto be = backend::make_backend("cpu");
      be->set_threads(variant == 2 ? 1 : 2);
      ModelConfig c = tiny(GetParam());
      c.compute_dtype = dt;
      c.recompute = variant == 1;
      auto m = make_model(c, *be);
      m->init(1);
      auto [ids, tg] = batch(2, 8, 64);
      m->zero_grad();
      losses.push_back(m->forward_backward(ids, tg, 1.f));
      runs.push_back(grads_of(*m));
    }
    EXPECT_EQ(losses[0], losses[1]);
    EXPECT_EQ(losses[0], losses[2]);
    EXPECT_TRUE(runs[0] == runs[1]) << "recompute changed gradients (" << dtype_name(dt) << ")";
    EXPECT_TRUE(runs[0] == runs[2]) << "thread count changed gradients (" << dtype_name(dt) << ")";
  }
}

// The trainer marks gradients stale instead of zeroing them (nn::Parameter::
// grad_stale): backward must then give bitwise the gradients a zeroed start
// gives, over accumulated micro-batches, with and without recomputation.
TEST_P(EachArch, StaleGradientsMatchZeroedOnes) {
  for (DType dt : {DType::F32, DType::BF16})
    for (bool recompute : {false, true}) {
      auto be = backend::make_backend("cpu");
      be->set_threads(2);
      ModelConfig c = tiny(GetParam());
      c.compute_dtype = dt;
      c.recompute = recompute;
      auto m = make_model(c, *be);
      m->init(5);
      auto [ids, tg] = batch(2, 8, 64);
      const auto poison = [&] {
        for (nn::Parameter* p : m->parameters()) {
          float* g = p->grad.data<float>();
          for (int64_t k = 0; k < p->numel(); ++k) g[k] = NAN;
        }
      };
      poison();
      m->zero_grad();
      m->forward_backward(ids, tg, 1.f);
      m->forward_backward(ids, tg, 0.5f);
      const auto zeroed = grads_of(*m);
      poison();
      for (nn::Parameter* p : m->parameters()) p->grad_stale = true;
      m->forward_backward(ids, tg, 1.f);
      m->forward_backward(ids, tg, 0.5f);
      for (nn::Parameter* p : m->parameters())
        EXPECT_FALSE(p->grad_stale) << p->name << " never reached by backward";
      const auto lazy = grads_of(*m);
      ASSERT_EQ(lazy.size(), zeroed.size());
      for (size_t k = 0; k < lazy.size(); ++k)
        EXPECT_EQ(std::memcmp(lazy[k].data(), zeroed[k].data(), lazy[k].size() * sizeof(float)), 0)
            << m->parameters()[k]->name << " (" << dtype_name(dt) << ", recompute " << recompute
            << ")";
    }
}

TEST_P(EachArch, GradScaleAccumulationAndForwardOnlyPaths) {
  auto be = backend::make_backend("ref");
  auto m = make_model(tiny(GetParam()), *be);
  m->init(2);
  auto [ids, tg] = batch(2, 8, 64);
  m->zero_grad();
  const float l1 = m->forward_backward(ids, tg, 1.f);
  const auto g1 = grads_of(*m);
  m->zero_grad();
  const float l2 = m->forward_backward(ids, tg, 0.5f);
  m->forward_backward(ids, tg, 1.5f);  // accumulates: 0.5 + 1.5 = 2x
  const auto g2 = grads_of(*m);
  EXPECT_EQ(l1, l2);
  for (size_t k = 0; k < g1.size(); ++k)
    for (size_t j = 0; j < g1[k].size(); ++j)
      ASSERT_NEAR(g2[k][j], 2.f * g1[k][j], 1e-5f * (1.f + std::abs(g1[k][j]))) << k << "," << j;
  EXPECT_FLOAT_EQ(m->loss(ids, tg), l1);
  const Tensor logits = m->logits(ids);
  EXPECT_EQ(logits.shape(), (Shape{2, 8, 64}));
  EXPECT_EQ(logits.dtype(), DType::F32);
  // Every target ignored: loss 0 and no gradient.
  Tensor none = Tensor::from_i32(std::vector<int32_t>(16, -1), Shape{2, 8});
  m->zero_grad();
  EXPECT_EQ(m->forward_backward(ids, none, 1.f), 0.f);
  for (const auto& g : grads_of(*m))
    for (float x : g) ASSERT_EQ(x, 0.f);
}

TEST_P(EachArch, BadBatchesThrow) {
  auto be = backend::make_backend("ref");
  auto m = make_model(tiny(GetParam()), *be);
  m->init(3);
  auto [ids, tg] = batch(1, 17, 64);  // T > max_seq_len
  EXPECT_THROW(m->forward_backward(ids, tg, 1.f), KernelError);
  auto [ids2, tg2] = batch(2, 4, 64);
  EXPECT_THROW(m->forward_backward(ids2, tg, 1.f), KernelError);  // shapes differ
  ids2.data<int32_t>()[3] = 64;                                   // out of vocabulary
  EXPECT_THROW(m->forward_backward(ids2, tg2, 1.f), KernelError);
}

INSTANTIATE_TEST_SUITE_P(Archs, EachArch, ::testing::Values("gpt2", "llama"));

}  // namespace
}  // namespace keel::model
