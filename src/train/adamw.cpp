#include "train/adamw.h"

#include <cmath>

#include "backend/ops.h"
#include "core/error.h"

namespace keel::train {

AdamW::AdamW(backend::Backend& be, std::vector<nn::Parameter*> params, AdamWConfig cfg)
    : be_(be), params_(std::move(params)), cfg_(cfg) {
  m_.reserve(params_.size());
  v_.reserve(params_.size());
  for (auto* p : params_) {
    if (p->value.dtype() != DType::F32 || p->grad.dtype() != DType::F32 ||
        p->grad.shape() != p->value.shape())
      fail("AdamW: parameter '{}' needs f32 value and grad of one shape, got {} and {}", p->name,
           p->value.desc(), p->grad.desc());
    m_.push_back(Tensor::zeros(p->value.shape(), DType::F32));
    v_.push_back(Tensor::zeros(p->value.shape(), DType::F32));
  }
  shard_end_ = params_.size();
}

void AdamW::set_shard(size_t begin, size_t end) {
  if (begin > end || end > params_.size())
    fail("AdamW: shard [{}, {}) is not a range of the {} parameters", begin, end, params_.size());
  shard_begin_ = begin;
  shard_end_ = end;
  materialize_moments();  // a widened shard needs its moments back
  release_unowned_moments();
}

void AdamW::materialize_moments() {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!m_[i].defined()) m_[i] = Tensor::zeros(params_[i]->value.shape(), DType::F32);
    if (!v_[i].defined()) v_[i] = Tensor::zeros(params_[i]->value.shape(), DType::F32);
  }
}

void AdamW::release_unowned_moments() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (i < shard_begin_ || i >= shard_end_) m_[i] = v_[i] = Tensor();
}

size_t AdamW::moment_bytes() const {
  size_t n = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    n += (m_[i].defined() ? m_[i].nbytes() : 0) + (v_[i].defined() ? v_[i].nbytes() : 0);
  return n;
}

void AdamW::step(double lr, float grad_scale, float variance_keep) {
  backend::AdamWArgs a;
  a.lr = float(lr);
  a.beta1 = float(cfg_.beta1);
  a.beta2 = float(cfg_.beta2);
  a.eps = float(cfg_.eps);
  a.grad_scale = grad_scale;
  a.variance_keep = variance_keep;
  a.t = t_ + 1;
  Tensor no_bf16;
  for (size_t i = shard_begin_; i < shard_end_; ++i) {
    nn::Parameter& p = *params_[i];
    a.weight_decay = p.decay ? float(cfg_.weight_decay) : 0.f;
    ops::adamw_update(be_, a, p.value, p.grad, m_[i], v_[i], no_bf16);
  }
  ++t_;
}

double grad_global_norm(backend::Backend& be, const std::vector<nn::Parameter*>& params) {
  double sum = 0;
  for (auto* p : params) sum += ops::sum_squares(be, p->grad);
  return std::sqrt(sum);
}

void zero_grads(const std::vector<nn::Parameter*>& params) {
  for (auto* p : params) p->grad.fill_zero();
}

}  // namespace keel::train
