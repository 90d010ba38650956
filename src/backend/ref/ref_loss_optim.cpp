// Reference softmax cross-entropy (forward and accumulating backward) and the
// decoupled AdamW update, in f64.
#include <cmath>
#include <limits>

#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

namespace {

template <class T>
double row_lse(const void* logits, int64_t i, int64_t V) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < V; ++j) mx = std::max(mx, ld<T>(logits, i * V + j));
  double sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(ld<T>(logits, i * V + j) - mx);
  return mx + std::log(sum);
}

}  // namespace

void cross_entropy_forward(DType dt, const void* logits, const int32_t* targets, float* losses,
                           float* lse, int64_t N, int64_t V) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < N; ++i) {
      const double l = row_lse<T>(logits, i, V);
      lse[i] = float(l);
      losses[i] = targets[i] < 0 ? 0.f : float(l - ld<T>(logits, i * V + targets[i]));
    }
  });
}

void cross_entropy_backward(DType dt, const void* logits, const int32_t* targets,
                            const float* dloss, void* dlogits, int64_t N, int64_t V) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < N; ++i) {
      if (targets[i] < 0) continue;  // ignored row: gradient 0
      const double l = row_lse<T>(logits, i, V), g = dloss[i];
      for (int64_t j = 0; j < V; ++j) {
        const double p = std::exp(ld<T>(logits, i * V + j) - l);
        st_add<T>(dlogits, i * V + j, g * (p - (j == targets[i] ? 1.0 : 0.0)));
      }
    }
  });
}

void adamw_update(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                  uint16_t* param_bf16) {
  const double b1 = a.beta1, b2 = a.beta2;
  const double bc1 = 1.0 - std::pow(b1, double(a.t)), bc2 = 1.0 - std::pow(b2, double(a.t));
  for (int64_t i = 0; i < a.n; ++i) {
    const double g = double(grad[i]) * double(a.grad_scale);
    const double mi = b1 * double(m[i]) + (1.0 - b1) * g;
    const double vi = b2 * double(v[i]) + (1.0 - b2) * g * g;
    const double k = a.variance_keep, mhat = mi / bc1;
    const double vhat = k * (vi / bc2) + (1.0 - k) * mhat * mhat;
    const double p = double(param[i]);
    const double upd = mhat / (std::sqrt(vhat) + double(a.eps)) + double(a.weight_decay) * p;
    m[i] = float(mi);
    v[i] = float(vi);
    param[i] = float(p - double(a.lr) * upd);
    if (param_bf16) param_bf16[i] = f32_to_bf16(param[i]);
  }
}

}  // namespace keel::backend::ref
