// The tape's gradient-ready events that data parallelism overlaps with:
// every parameter is reported exactly once per backward, and when it is, its
// gradient already equals its final value (the tied GPT-2 embedding, used at
// both ends of the graph, included; with and without block recomputation).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "../train/train_test_util.h"
#include "backend/backend.h"
#include "model/causal_lm.h"
#include "nn/tape.h"

using namespace keel;

namespace {

struct Recorder : nn::GradListener {
  std::map<std::string, std::vector<float>> at_ready;
  std::vector<std::string> order;
  int ends = 0;
  void on_grad_ready(nn::Parameter& p) override {
    EXPECT_EQ(at_ready.count(p.name), 0u) << p.name << " reported twice";
    at_ready[p.name] = p.grad.to_f32_vector();
    order.push_back(p.name);
  }
  void on_backward_end() override { ++ends; }
};

void check_events(bool recompute) {
  auto be = backend::make_backend("cpu");
  be->set_threads(1);
  model::ModelConfig cfg = train::testing::tiny_model_config();
  cfg.n_layer = 2;
  cfg.recompute = recompute;
  auto m = model::make_model(cfg, *be);
  m->init(3);
  m->sync_compute_weights();
  auto* lm = dynamic_cast<model::CausalLM*>(m.get());
  ASSERT_NE(lm, nullptr);
  Recorder rec;
  lm->set_grad_listener(&rec);
  Tensor ids = Tensor::zeros({2, 16}, DType::I32), tg = Tensor::zeros({2, 16}, DType::I32);
  for (int64_t i = 0; i < 32; ++i) {
    ids.data<int32_t>()[i] = int32_t((7 * i + 1) % 64);
    tg.data<int32_t>()[i] = int32_t((5 * i + 3) % 64);
  }
  m->zero_grad();
  m->forward_backward(ids, tg, 0.5f);
  ASSERT_EQ(rec.ends, 1);
  const auto params = m->parameters();
  ASSERT_EQ(rec.at_ready.size(), params.size());
  for (auto* p : params) {
    ASSERT_EQ(rec.at_ready.count(p->name), 1u) << p->name << " never reported";
    const auto now = p->grad.to_f32_vector();
    const auto& then = rec.at_ready[p->name];
    ASSERT_EQ(now.size(), then.size());
    EXPECT_EQ(std::memcmp(now.data(), then.data(), now.size() * sizeof(float)), 0)
        << p->name << ": gradient changed after it was reported final";
  }
  // The tied embedding gets its last contribution from the lookup, which is
  // the first op of forward: it is reported last; the final norm early.
  EXPECT_EQ(rec.order.back() == "wte.weight" || rec.order.back() == "wpe.weight", true)
      << rec.order.back();
  EXPECT_LT(std::find(rec.order.begin(), rec.order.end(), "ln_f.weight") - rec.order.begin(),
            std::find(rec.order.begin(), rec.order.end(), "wte.weight") - rec.order.begin());
  // Forward-only evaluation reports nothing.
  m->loss(ids, tg);
  EXPECT_EQ(rec.ends, 1);
  lm->set_grad_listener(nullptr);
  m->forward_backward(ids, tg, 0.5f);
  EXPECT_EQ(rec.ends, 1);
}

}  // namespace

TEST(GradListener, EveryParameterOnceAndFinal) {
  check_events(false);
}
TEST(GradListener, EveryParameterOnceAndFinalWithRecompute) {
  check_events(true);
}
