#include "train/adamw.h"

#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "backend/device_tensor.h"
#include "backend/ops.h"
#include "core/error.h"
#include "core/piece_digest.h"

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
    m_.push_back(backend::empty_on(be_, p->value.shape(), DType::F32, "exp_avg." + p->name));
    v_.push_back(backend::empty_on(be_, p->value.shape(), DType::F32, "exp_avg_sq." + p->name));
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
    const std::string& name = params_[i]->name;
    if (!m_[i].defined())
      m_[i] = backend::empty_on(be_, params_[i]->value.shape(), DType::F32, "exp_avg." + name);
    if (!v_[i].defined())
      v_[i] = backend::empty_on(be_, params_[i]->value.shape(), DType::F32, "exp_avg_sq." + name);
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
  bool all = shard_begin_ == 0 && shard_end_ == params_.size();
  // Per parameter {m before, v before, m after, v after}; folded in
  // moments_hash's order (m then v of each parameter).
  const bool digests = digest_moments_ && be_.digests_moments();
  std::vector<uint64_t> before, after;
  for (size_t i = shard_begin_; i < shard_end_; ++i) {
    nn::Parameter& p = *params_[i];
    a.weight_decay = p.decay ? float(cfg_.weight_decay) : 0.f;
    // Same rounding as the cast that sync_compute_weights would do afterwards.
    const bool copy = p.compute.defined() && p.compute.dtype() == DType::BF16 &&
                      p.compute.raw() != p.value.raw() && p.compute.numel() == p.value.numel() &&
                      p.compute.is_contiguous();
    all = all && copy;
    uint64_t d[4] = {};
    a.moment_digests = digests ? d : nullptr;
    ops::adamw_update(be_, a, p.value, p.grad, m_[i], v_[i], copy ? p.compute : no_bf16);
    if (digests) {
      before.insert(before.end(), {d[0], d[1]});
      after.insert(after.end(), {d[2], d[3]});
    }
  }
  wrote_compute_copies_ = all;
  digests_valid_ = digests;
  if (digests) {
    digest_before_ = combine_piece_digests(before.data(), before.size());
    digest_after_ = combine_piece_digests(after.data(), after.size());
  }
  ++t_;
}

double grad_global_norm(backend::Backend& be, const std::vector<nn::Parameter*>& params) {
  double sum = 0;
  if (be.host_memory()) {
    for (auto* p : params) sum += ops::sum_squares(be, p->grad);
    return std::sqrt(sum);
  }
  // Per-parameter sums stay on the device and come back in one read; added
  // in the same order as above, so the norm does not depend on the memory.
  const size_t n = params.size();
  std::unique_ptr<void, std::function<void(void*)>> d(
      be.allocate(n * sizeof(double), "gradient norms"), [&be](void* p) { be.release(p); });
  for (size_t i = 0; i < n; ++i) {
    const Tensor& g = params[i]->grad;
    if (g.dtype() != DType::F32 || !g.is_contiguous() || g.device_name() != be.name())
      fail<KernelError>("grad_global_norm: gradient of '{}' is {}, not contiguous f32 on {}",
                        params[i]->name, g.desc(), be.name());
    be.sum_squares(DType::F32, g.raw(), g.numel(), static_cast<double*>(d.get()) + i);
  }
  std::vector<double> parts(n);
  be.download(parts.data(), d.get(), n * sizeof(double));
  for (double x : parts) sum += x;
  return std::sqrt(sum);
}

void zero_grads(backend::Backend& be, const std::vector<nn::Parameter*>& params) {
  for (auto* p : params) backend::zero(be, p->grad);
}

}  // namespace keel::train
