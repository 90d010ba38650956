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
}

void AdamW::step(double lr, float grad_scale) {
  backend::AdamWArgs a;
  a.lr = float(lr);
  a.beta1 = float(cfg_.beta1);
  a.beta2 = float(cfg_.beta2);
  a.eps = float(cfg_.eps);
  a.grad_scale = grad_scale;
  a.t = t_ + 1;
  Tensor no_bf16;
  for (size_t i = 0; i < params_.size(); ++i) {
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
