// CausalLM: what every decoder-only architecture shares: parameter store,
// tape, the loss/backward step, forward-only evaluation and optional block
// recomputation. An architecture only supplies forward() and block().
#pragma once
#include <cstdint>

#include "model/model.h"
#include "nn/param_store.h"
#include "nn/tape.h"

namespace keel::model {

class CausalLM : public Model {
 public:
  // cfg must already be resolved (resolve_config).
  CausalLM(const ModelConfig& cfg, backend::Backend& be);

  const ModelConfig& config() const override { return cfg_; }
  std::vector<nn::Parameter*> parameters() override { return params_.all(); }
  void init(uint64_t seed) override;
  void sync_compute_weights() override { params_.sync_compute(); }
  backend::Backend& backend() const override { return be_; }
  float forward_backward(const Tensor& ids, const Tensor& targets, float grad_scale) override;
  float loss(const Tensor& ids, const Tensor& targets) override;
  Tensor logits(const Tensor& ids) override;
  size_t activation_bytes() const override { return tape_.high_water(); }
  // Tells l during every later backward when a parameter's gradient is final
  // (data parallelism overlaps its reduction with the rest of backward).
  void set_grad_listener(nn::GradListener* l) { tape_.set_grad_listener(l); }

 protected:
  // ids i32 (B, T), in the backend's memory -> f32 logits (B, T, V).
  virtual nn::Value forward(nn::Tape& tape, const Tensor& ids) = 0;
  // One transformer block (B, T, C) -> (B, T, C).
  virtual nn::Value block(nn::Tape& tape, int64_t layer, const nn::Value& x) = 0;
  // block(), as a recomputed segment when cfg.recompute is set.
  nn::Value run_block(nn::Tape& tape, int64_t layer, const nn::Value& x);
  // Positions 0..T-1 for every row of ids, as an i32 (B, T) tensor in the
  // step's arena, in the backend's memory.
  Tensor positions(nn::Tape& tape, const Tensor& ids) const;

  ModelConfig cfg_;
  backend::Backend& be_;
  nn::ParamStore params_;

 private:
  static nn::Value block_segment(nn::Tape& tape, void* ctx, int64_t layer, const nn::Value& x);
  void check_batch(const Tensor& ids, const Tensor* targets) const;
  nn::Tape tape_;
};

}  // namespace keel::model
