// DeepSeekMoE feed-forward: always-on shared experts plus fine-grained routed
// experts, top-k gating, and auxiliary-loss-free load balancing (a per-expert
// bias that shifts only the top-k selection, nudged each step toward equal
// load), with an optional small sequence-level balance loss. Routing, its
// statistics and the balance loss run on the backend, in its memory; the
// host reads the statistics once per step, where it updates the bias.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"
#include "nn/modules.h"

namespace keel::model {

class MoeFeedForward {
 public:
  MoeFeedForward() = default;
  // aux_loss: one f64 in the backend's memory that the balance loss of each
  // training micro-batch is added to (the owner reads and clears it).
  MoeFeedForward(nn::ParamStore& ps, const std::string& prefix, const ModelConfig& c, float std,
                 float out_std, double* aux_loss);

  // x (B, T, C) -> (B, T, C). When `train` is set the routing feeds the step's
  // statistics (once per micro-batch: a recomputed forward does not count
  // twice) and, with aux_loss_alpha > 0, the balance loss, whose gradient
  // (times grad_scale) enters backward and whose value is added to the
  // aux_loss slot.
  nn::Value forward(nn::Tape& tape, const nn::Value& x, bool train, float grad_scale);
  // A new micro-batch: the next training forward counts again, and its
  // routing jitter (ModelConfig::router_noise) comes from noise_seed, so a
  // recomputed forward routes the same way.
  void begin_micro_batch(uint64_t noise_seed) {
    counted_ = false;
    noise_seed_ = noise_seed;
  }
  // When applied: c_e += rate * sd_e * clamp((mean load - load_e) / mean
  // load, -1, 1) (the load without the jitter) and bias_e = c_e - (m_e -
  // mean_e' m_e'), with m_e and sd_e the mean and spread of expert e's score
  // over the step's tokens (see the definition for why). Clears the step's
  // statistics.
  void end_step(bool applied);

  Tensor& bias() { return bias_; }  // f32 (E): selection-only routing bias
  // f32 (4, E): this step's tokens routed to each expert, the sums of each
  // expert's score and squared score over the step's tokens, and the tokens
  // each expert would get without the jitter (the load the bias balances;
  // sums, so data-parallel ranks add them up to the global figures).
  Tensor& load() { return load_; }
  Tensor& integral() { return integral_; }  // f32 (E): the load feedback part of the bias
  // max / mean of this step's load (0 when nothing was routed).
  double load_max_over_mean() const;
  double mean_entropy() const;
  int64_t dropped() const;
  // Mean over the forward-only passes since the last call of their load
  // max/mean (0 when there were none); clears it.
  double take_eval_load_max_over_mean();
  // Routing decisions of the last forward: i32 (N, K) (valid until the next step).
  const Tensor& last_idx() const { return last_idx_; }

 private:
  // The step's load and statistics read back to the host, once per step
  // (after the replicas have summed the load).
  struct HostStats {
    std::vector<float> load;  // (4, E)
    double entropy_sum = 0, dropped = 0;
  };
  const HostStats& host_stats() const;

  backend::Backend* be_ = nullptr;
  backend::MoeRouteArgs route_;
  int64_t E_ = 0, K_ = 0;
  float capacity_factor_ = 0, bias_rate_ = 0, aux_alpha_ = 0, noise_ = 0;
  uint64_t noise_seed_ = 0;
  nn::Linear gate_;                  // mlp.gate (E, C)
  nn::Parameter* w_gate_ = nullptr;  // mlp.experts.gate_proj (E, F, C)
  nn::Parameter* w_up_ = nullptr;    // mlp.experts.up_proj (E, F, C)
  nn::Parameter* w_down_ = nullptr;  // mlp.experts.down_proj (E, C, F)
  bool has_shared_ = false;
  nn::SwiGLUMLP shared_;  // mlp.shared_experts
  Tensor bias_, load_;    // backend memory
  Tensor integral_;       // host memory (only end_step reads it)
  // Backend memory, f64 as i32 word pairs: [entropy sum, dropped slots], and
  // where a recomputed forward's balance loss goes (not counted).
  Tensor stats_, aux_discard_;
  double* aux_loss_ = nullptr;
  Tensor last_idx_;
  bool counted_ = false;
  mutable HostStats host_;
  mutable bool host_fresh_ = false;
  double eval_load_sum_ = 0;
  int64_t eval_forwards_ = 0;
  int64_t tokens_ = 0;
};

}  // namespace keel::model
