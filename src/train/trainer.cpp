#include "train/trainer.h"

#include <chrono>
#include <cmath>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "core/log.h"

namespace keel::train {

namespace {

// Whatever no backward node touched is still stale after the micro-batches: zero it now.
void clear_stale_grads(backend::Backend& be, const std::vector<nn::Parameter*>& params) {
  for (nn::Parameter* p : params)
    if (p->grad_stale) {
      backend::zero(be, p->grad);
      p->grad_stale = false;
    }
}

}  // namespace

Trainer::Trainer(model::Model& model, backend::Backend& be, data::BatchSampler train,
                 std::optional<data::EvalSampler> val, TrainerOptions opt)
    : model_(model),
      be_(be),
      train_(std::move(train)),
      val_(std::move(val)),
      opt_(opt),
      params_(model.parameters()),
      opt_state_(be, params_, opt.adamw) {
  if (train_.batch_size() != opt_.batch_size || train_.seq_len() != opt_.seq_len)
    fail("Trainer: sampler gives ({}, {}) batches but the options say batch_size {} seq_len {}",
         train_.batch_size(), train_.seq_len(), opt_.batch_size, opt_.seq_len);
  if (opt_.grad_accum < 1 || opt_.steps < 1 || opt_.data_world < 1 || opt_.data_rank < 0 ||
      opt_.data_rank >= opt_.data_world)
    fail("Trainer: need grad_accum >= 1, steps >= 1 and 0 <= data_rank < data_world");
  inputs_ = Tensor::zeros({opt_.batch_size, opt_.seq_len}, DType::I32);
  targets_ = Tensor::zeros({opt_.batch_size, opt_.seq_len}, DType::I32);
}

int64_t Trainer::tokens_per_step() const {
  return opt_.batch_size * opt_.seq_len * opt_.grad_accum;
}

uint64_t Trainer::micro_batch_index(int64_t s, int64_t m) const {
  return uint64_t(s) * uint64_t(opt_.data_world * opt_.grad_accum) +
         uint64_t(opt_.data_rank * opt_.grad_accum + m);
}

StepMetrics Trainer::step() {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  StepMetrics m;
  const backend::Backend::TransferStats moved0 = be_.transfer_stats();
  m.lr = opt_.schedule.at(step_);
  // Alone, the gradients are cleared lazily by the backward pass (see
  // Parameter::grad_stale); replicas reduce gradients as they become ready and
  // may read any of them, so they get them zeroed up front.
  if (sync_ && sync_->needs_zeroed_gradients())
    zero_grads(be_, params_);
  else
    for (nn::Parameter* p : params_) p->grad_stale = true;
  if (sync_) sync_->begin_step(step_);
  const float scale = 1.f / float(opt_.grad_accum);
  double loss_sum = 0;
  for (int64_t k = 0; k < opt_.grad_accum; ++k) {
    train_.fill(micro_batch_index(step_, k), 0, inputs_, targets_);
    loss_sum += double(model_.forward_backward(inputs_, targets_, scale));
  }
  clear_stale_grads(be_, params_);
  m.loss = loss_sum / double(opt_.grad_accum);
  if (sync_) {
    if (before_gradient_sync_) before_gradient_sync_();
    sync_->finish_gradients(params_);
    m.loss = sync_->mean(m.loss);
  }
  m.grad_norm = grad_global_norm(be_, params_);
  if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
    m.skipped = true;
    log().warn("step {}: non-finite loss {} or gradient norm {}: update skipped", step_ + 1, m.loss,
               m.grad_norm);
  } else {
    float clip = 1.f;
    if (opt_.grad_clip > 0 && m.grad_norm > opt_.grad_clip)
      clip = float(opt_.grad_clip / m.grad_norm);
    if (sync_)
      sync_->optimizer_step(opt_state_, m.lr, clip);
    else
      opt_state_.step(m.lr, clip);
    // Replicas may change the weights after the update (gathers, outer
    // steps); alone, the update itself may have written the bf16 copies.
    if ((sync_ && sync_->changed_weights_after_update()) || !opt_state_.wrote_compute_copies())
      model_.sync_compute_weights();
  }
  // Routing statistics of this step, then the balancing update they drive;
  // replicas first agree on the global load so their routing biases stay equal.
  if (sync_)
    for (auto& [name, t] : model_.state_buffers())
      if (name.ends_with(".expert_load")) {
        // On a device the sum goes through a host copy (to_host is t itself on the host).
        Tensor h = backend::to_host(be_, *t);
        sync_->sum_state({h.data<float>(), size_t(h.numel())});
        if (h.raw() != t->raw()) backend::copy_from_host(be_, h, *t);
      }
  m.model_stats = model_.step_statistics();
  model_.on_step_end(!m.skipped);
  if (sync_) {
    if (sync_->end_step()) model_.sync_compute_weights();
    m.bytes_sent = sync_->step_bytes_sent();
  }
  ++step_;
  m.step = step_;
  m.step_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  const double tokens = double(tokens_per_step());
  m.tokens_per_s = tokens / std::max(m.step_seconds, 1e-9);
  if (opt_.peak_flops > 0)
    m.mfu = model_.flops_per_token(opt_.seq_len) * m.tokens_per_s / opt_.peak_flops;
  if (val_ && ((opt_.eval_every > 0 && step_ % opt_.eval_every == 0) || step_ == opt_.steps)) {
    if (before_evaluate_) before_evaluate_();
    m.val_loss = evaluate();
    for (auto& kv : model_.take_eval_statistics()) m.model_stats.push_back(kv);
  }
  const backend::Backend::TransferStats moved = be_.transfer_stats();
  m.host_syncs = moved.syncs - moved0.syncs;
  m.bytes_to_device = moved.bytes_to_device - moved0.bytes_to_device;
  m.bytes_to_host = moved.bytes_to_host - moved0.bytes_to_host;
  m.peak_rss_mb = peak_rss_mb();
  return m;
}

double Trainer::evaluate() {
  if (!val_ || val_->num_batches() == 0) fail("Trainer: no validation batches to evaluate on");
  Tensor in = Tensor::zeros({val_->batch_size(), val_->seq_len()}, DType::I32);
  Tensor tg = Tensor::zeros({val_->batch_size(), val_->seq_len()}, DType::I32);
  // Replicas holding the same weights share the batches out and add up
  // their sums (in rank order, so every replica gets the same bits); alone,
  // each would redo the whole pass.
  const bool split = sync_ && opt_.data_world > 1 && sync_->replicas_identical();
  const int64_t stride = split ? opt_.data_world : 1, first = split ? opt_.data_rank : 0;
  double sum = 0;
  for (int64_t b = first; b < val_->num_batches(); b += stride) {
    val_->fill(b, in, tg);
    sum += double(model_.loss(in, tg));
  }
  if (split) sum = sync_->mean(sum) * double(stride);
  last_val_ = sum / double(val_->num_batches());
  return *last_val_;
}

}  // namespace keel::train
