// The training step (forward, loss, backward through the tape) and forward-only
// evaluation shared by every architecture.
#include "model/causal_lm.h"

#include "backend/device_tensor.h"
#include "core/error.h"
#include "nn/functional.h"

namespace keel::model {

CausalLM::CausalLM(const ModelConfig& cfg, backend::Backend& be)
    : cfg_(cfg), be_(be), params_(cfg.compute_dtype, be), tape_(be, cfg.compute_dtype) {}

void CausalLM::init(uint64_t seed) {
  params_.init(seed);
  sync_compute_weights();
}

void CausalLM::check_batch(const Tensor& ids, const Tensor* targets) const {
  if (!ids.defined() || ids.dtype() != DType::I32 || ids.rank() != 2 || !ids.is_contiguous())
    fail<KernelError>("[{}] ids must be contiguous i32 (B, T), got {}", cfg_.arch,
                      ids.defined() ? ids.desc() : "undefined");
  if (ids.dim(0) < 1 || ids.dim(1) < 1 || ids.dim(1) > cfg_.max_seq_len)
    fail<KernelError>("[{}] ids {}: need B >= 1 and 1 <= T <= max_seq_len={}", cfg_.arch,
                      ids.desc(), cfg_.max_seq_len);
  if (targets && (!targets->defined() || targets->dtype() != DType::I32 ||
                  targets->shape() != ids.shape() || !targets->is_contiguous()))
    fail<KernelError>("[{}] targets {} must be contiguous i32 of ids' shape {}", cfg_.arch,
                      targets->defined() ? targets->desc() : "undefined", ids.shape().str());
}

float CausalLM::forward_backward(const Tensor& ids, const Tensor& targets, float grad_scale) {
  check_batch(ids, &targets);
  tape_.begin(true);
  nn::Value logits = forward(tape_, tape_.input(ids));
  const float loss = nn::cross_entropy(tape_, logits, targets, grad_scale);
  tape_.backward();
  return loss;
}

float CausalLM::loss(const Tensor& ids, const Tensor& targets) {
  check_batch(ids, &targets);
  tape_.begin(false);
  nn::Value logits = forward(tape_, tape_.input(ids));
  return nn::cross_entropy(tape_, logits, targets, 1.f);
}

Tensor CausalLM::logits(const Tensor& ids) {
  check_batch(ids, nullptr);
  tape_.begin(false);
  const Tensor out = forward(tape_, tape_.input(ids)).t;
  return out.on_host() ? out.clone() : backend::to_host(be_, out);
}

nn::Value CausalLM::block_segment(nn::Tape& tape, void* ctx, int64_t layer, const nn::Value& x) {
  return static_cast<CausalLM*>(ctx)->block(tape, layer, x);
}

nn::Value CausalLM::run_block(nn::Tape& tape, int64_t layer, const nn::Value& x) {
  if (cfg_.recompute) return tape.checkpoint(&CausalLM::block_segment, this, layer, x);
  return block(tape, layer, x);
}

Tensor CausalLM::positions(nn::Tape& tape, const Tensor& ids) const {
  const int64_t B = ids.dim(0), T = ids.dim(1);
  Tensor pos = be_.host_memory() ? tape.scratch(Shape{B, T}, DType::I32)
                                 : Tensor::zeros(Shape{B, T}, DType::I32);
  int32_t* p = pos.data<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) p[b * T + t] = int32_t(t);
  return tape.input(pos);
}

}  // namespace keel::model
