// Parameter allocation, deterministic initialisation and compute copies.
#include "nn/param_store.h"

#include <algorithm>

#include "backend/device_tensor.h"
#include "backend/ops.h"
#include "core/error.h"
#include "core/rng.h"

namespace keel::nn {

Parameter* ParamStore::add(const std::string& name, const Shape& shape, bool decay,
                           ParamInit init) {
  for (const Parameter* p : ptrs_)
    if (p->name == name) fail("parameter '{}' is defined twice", name);
  auto p = std::make_unique<Parameter>();
  p->name = name;
  p->value = backend::empty_on(be_, shape, DType::F32, name);
  p->grad = backend::empty_on(be_, shape, DType::F32, name + " (gradient)");
  p->compute = compute_dtype_ == DType::F32
                   ? p->value
                   : backend::empty_on(be_, shape, compute_dtype_, name + " (compute copy)");
  p->decay = decay;
  ptrs_.push_back(p.get());
  params_.push_back(std::move(p));
  inits_.push_back(init);
  return ptrs_.back();
}

uint64_t ParamStore::stream_of(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

void ParamStore::init(uint64_t seed) {
  for (size_t i = 0; i < ptrs_.size(); ++i) {
    Parameter& p = *ptrs_[i];
    // Drawn on the host (the RNG streams are host code), then moved.
    const Tensor host = p.value.on_host() ? p.value : Tensor::zeros(p.value.shape(), DType::F32);
    float* v = host.data<float>();
    const int64_t n = p.numel();
    switch (inits_[i].kind) {
      case ParamInit::Kind::Normal: {
        // Chunks draw numbers [k, k + chunk) of the parameter's stream, so the
        // result is the same for any thread count.
        const Rng rng(seed, stream_of(p.name));
        const int64_t chunk = int64_t(1) << 16, chunks = (n + chunk - 1) / chunk;
        const float sd = inits_[i].std;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t k = c * chunk;
          rng.fill_normal(v + k, std::min(chunk, n - k), sd, uint64_t(k));
        }
        break;
      }
      case ParamInit::Kind::Zeros:
        std::fill(v, v + n, 0.f);
        break;
      case ParamInit::Kind::Ones:
        std::fill(v, v + n, 1.f);
        break;
    }
    if (!p.value.on_host()) backend::copy_from_host(be_, host, p.value);
  }
}

void ParamStore::sync_compute() {
  for (Parameter* p : ptrs_) {
    if (compute_dtype_ == DType::F32) {
      p->compute = p->value;  // also picks up a value tensor replaced by a loader
      continue;
    }
    if (!p->compute.defined() || p->compute.shape() != p->value.shape() ||
        p->compute.dtype() != compute_dtype_)
      p->compute = backend::empty_on(be_, p->value.shape(), compute_dtype_, p->name);
    ops::cast(be_, p->value, p->compute);
  }
}

void ParamStore::zero_grad() {
  for (Parameter* p : ptrs_) {
    backend::zero(be_, p->grad);
    p->grad_stale = false;
  }
}

}  // namespace keel::nn
