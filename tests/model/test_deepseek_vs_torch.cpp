// deepseek (multi-head latent attention + DeepSeekMoE) against an independent
// PyTorch model (tests/reference/deepseek_torch.py, float64): loss, logits,
// every parameter gradient and the routing decisions of one batch, then the
// losses and parameters after three AdamW steps, on the ref and cpu backends.
// "block" is one MLA+MoE layer (softmax gating, shared expert, the
// sequence-level balance loss on); "tiny" is a whole small model (a dense
// first layer, compressed q, sigmoid gating, routed scaling). Both route with
// a non-zero selection bias, so the bias must shift choices exactly as torch's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "core/rng.h"
#include "model/deepseek.h"
#include "model/model.h"
#include "torch_oracle.h"

namespace keel::model {
namespace {

namespace fs = std::filesystem;
using torch_oracle::read_f64;
using torch_oracle::read_i32;
using torch_oracle::rel_err;

struct Case {
  std::string variant, backend;
};

ModelConfig config_for(const std::string& variant) {
  ModelConfig c;
  c.arch = "deepseek";
  c.vocab_size = 64;
  c.n_head = 4;
  c.n_embd = 32;
  c.ffn_hidden = 48;
  c.max_seq_len = 16;
  c.kv_lora_rank = 12;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.n_routed_experts = 6;
  c.moe_ffn_hidden = 16;
  if (variant == "block") {
    c.n_layer = 1;
    c.v_head_dim = 6;  // narrower than the q/k heads (12)
    c.top_k = 2;
    c.n_shared_experts = 1;
    c.gating = "softmax";
    c.norm_topk_prob = false;
    c.aux_loss_alpha = 0.01f;
  } else {
    c.n_layer = 2;
    c.n_dense_layers = 1;
    c.q_lora_rank = 16;
    c.top_k = 3;
    c.n_shared_experts = 0;
    c.gating = "sigmoid";
    c.routed_scaling = 2.f;
  }
  return c;
}

class DeepSeekVsTorch : public ::testing::TestWithParam<Case> {};

TEST_P(DeepSeekVsTorch, LossLogitsGradsRoutingAndAdamW) {
  const Case& tc = GetParam();
  auto be = backend::make_backend(tc.backend);
  auto model = make_model(config_for(tc.variant), *be);
  model->init(4321);
  const ModelConfig& cfg = model->config();
  const int64_t B = 2, T = 8, V = cfg.vocab_size;

  std::vector<int32_t> ids(size_t(B * T)), targets(size_t(B * T));
  Rng rng(11, 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = int32_t(rng.below(2 * i, uint64_t(V)));
    targets[i] = int32_t(rng.below(2 * i + 1, uint64_t(V)));
  }
  targets[5] = -1;
  const Tensor tids = Tensor::from_i32(ids, Shape{B, T});
  const Tensor ttargets = Tensor::from_i32(targets, Shape{B, T});

  // A selection bias large enough to change some choices.
  nlohmann::json bias = nlohmann::json::object();
  Rng brng(99, 0);
  uint64_t ctr = 0;
  for (auto& [name, t] : model->state_buffers()) {
    if (name.find("e_score_correction_bias") == std::string::npos) continue;
    const std::string layer = name.substr(13, name.find(".mlp") - 13);  // model.layers.<l>.mlp...
    float* b = t->data<float>();
    std::vector<double> vals;
    for (int64_t e = 0; e < t->numel(); ++e) {
      b[e] = 0.1f * brng.normal(ctr++);
      vals.push_back(double(b[e]));
    }
    bias[layer] = vals;
  }
  ASSERT_FALSE(bias.empty());

  backend::AdamWArgs opt;
  opt.lr = 1e-3f;
  opt.eps = 1e-6f;
  opt.weight_decay = 0.1f;
  const int steps = 3;

  const fs::path dir = fs::temp_directory_path() / fmt::format("keel_deepseek_vs_torch_{}_{}_{}",
                                                               tc.variant, tc.backend, getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json man;
  man["config"] = {{"arch", cfg.arch},
                   {"vocab_size", cfg.vocab_size},
                   {"n_layer", cfg.n_layer},
                   {"n_head", cfg.n_head},
                   {"n_embd", cfg.n_embd},
                   {"max_seq_len", cfg.max_seq_len},
                   {"rope_theta", cfg.rope_theta},
                   {"norm_eps", cfg.norm_eps},
                   {"q_lora_rank", cfg.q_lora_rank},
                   {"kv_lora_rank", cfg.kv_lora_rank},
                   {"qk_nope_head_dim", cfg.qk_nope_head_dim},
                   {"qk_rope_head_dim", cfg.qk_rope_head_dim},
                   {"v_head_dim", cfg.v_head_dim},
                   {"n_routed_experts", cfg.n_routed_experts},
                   {"n_shared_experts", cfg.n_shared_experts},
                   {"top_k", cfg.top_k},
                   {"n_dense_layers", cfg.n_dense_layers},
                   {"gating", cfg.gating},
                   {"norm_topk_prob", cfg.norm_topk_prob},
                   {"routed_scaling", cfg.routed_scaling},
                   {"aux_loss_alpha", cfg.aux_loss_alpha}};
  man["bias"] = bias;
  const std::vector<nn::Parameter*> params = model->parameters();
  torch_oracle::write_inputs(dir, man, ids, targets, B, T, params, opt, steps);
  if (const std::string err = torch_oracle::run_reference("deepseek_torch.py", dir); !err.empty())
    FAIL() << "PyTorch reference failed (" << err;
  const std::vector<double> ref_losses = read_f64(dir / "losses.f64", steps);
  const std::vector<double> ref_logits = read_f64(dir / "logits.f64", size_t(B * T * V));

  model->zero_grad();
  const float loss = model->forward_backward(tids, ttargets, 1.f);
  const double loss_err = std::abs(loss - ref_losses[0]) / std::abs(ref_losses[0]);

  // Routing decisions: identical expert ids, in the same (best-first) order.
  const std::vector<Tensor> routes = deepseek_last_routing(*model);
  ASSERT_EQ(routes.size(), size_t(cfg.n_layer - cfg.n_dense_layers));
  int64_t differing = 0;
  for (size_t l = 0; l < routes.size(); ++l) {
    const std::vector<int32_t> want =
        read_i32(dir / fmt::format("route.{}.i32", l), size_t(B * T * cfg.top_k));
    const int32_t* got = routes[l].data<int32_t>();
    for (size_t i = 0; i < want.size(); ++i) differing += got[i] != want[i];
  }
  EXPECT_EQ(differing, 0) << "routing decisions differ from torch's";

  double worst_grad = 0;
  std::string worst_name;
  for (size_t i = 0; i < params.size(); ++i) {
    const nn::Parameter& p = *params[i];
    const std::vector<double> g = read_f64(dir / fmt::format("grad.{}.f64", i), size_t(p.numel()));
    const double e = rel_err(p.grad.to_f32_vector(), g);
    EXPECT_LE(e, 1e-4) << "gradient of " << p.name;
    if (e >= worst_grad) worst_grad = e, worst_name = p.name;
  }
  const double logits_err = rel_err(model->logits(tids).to_f32_vector(), ref_logits);
  EXPECT_LE(loss_err, 1e-5) << "keel loss " << loss << " torch " << ref_losses[0];
  EXPECT_LE(logits_err, 1e-4);

  const double worst_step_loss =
      torch_oracle::adamw_steps(*model, *be, params, opt, steps, tids, ttargets, ref_losses);
  double worst_param = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const nn::Parameter& p = *params[i];
    const std::vector<double> ref =
        read_f64(dir / fmt::format("param.{}.f64", i), size_t(p.numel()));
    const std::vector<float> got = p.value.to_f32_vector();
    double e = 0;
    for (size_t j = 0; j < got.size(); ++j) e = std::max(e, std::abs(double(got[j]) - ref[j]));
    e /= opt.lr;
    EXPECT_LE(e, 1e-2) << "parameter " << p.name << " after " << steps << " steps";
    worst_param = std::max(worst_param, e);
  }
  EXPECT_LE(worst_step_loss, 1e-5);
  std::printf(
      "[deepseek %s %s] loss %.6f (torch %.6f) rel err %.2e | logits %.2e | worst grad %.2e (%s) "
      "| routing: %lld of %lld ids differ | step losses %.2e | max|dp|/lr %.2e\n",
      tc.variant.c_str(), tc.backend.c_str(), double(loss), ref_losses[0], loss_err, logits_err,
      worst_grad, worst_name.c_str(), static_cast<long long>(differing),
      static_cast<long long>(routes.size()) * B * T * cfg.top_k, worst_step_loss, worst_param);
  if (!HasFailure()) fs::remove_all(dir);
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.variant + "_" + info.param.backend;
}

INSTANTIATE_TEST_SUITE_P(Variants, DeepSeekVsTorch,
                         ::testing::Values(Case{"block", "ref"}, Case{"tiny", "ref"},
                                           Case{"block", "cpu"}, Case{"tiny", "cpu"}),
                         case_name);

}  // namespace
}  // namespace keel::model
