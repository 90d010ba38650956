// ParamStore: owns a model's Parameters in a fixed order, with how each is
// initialised. Every parameter draws from its own RNG stream keyed by its
// name, so initialisation does not depend on order or thread count.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "nn/parameter.h"

namespace keel::nn {

struct ParamInit {
  enum class Kind : uint8_t { Normal, Zeros, Ones } kind = Kind::Normal;
  float std = 0.02f;
  static ParamInit normal(float s) { return {Kind::Normal, s}; }
  static ParamInit zeros() { return {Kind::Zeros, 0.f}; }
  static ParamInit ones() { return {Kind::Ones, 0.f}; }
};

class ParamStore {
 public:
  // Parameters (value, grad, compute copy) live in be's memory: a device's
  // for a device backend (initialisation uploads), else the host's.
  ParamStore(DType compute_dtype, backend::Backend& be) : compute_dtype_(compute_dtype), be_(be) {}
  // Adds a zeroed parameter (value, grad and compute copy allocated). The
  // pointer stays valid for the store's lifetime.
  Parameter* add(const std::string& name, const Shape& shape, bool decay, ParamInit init);

  const std::vector<Parameter*>& all() const { return ptrs_; }
  // Stream of the parameter's RNG: FNV-1a of its name.
  static uint64_t stream_of(const std::string& name);
  void init(uint64_t seed);
  // compute := value (f32: the same tensor; bf16: a cast copy).
  void sync_compute();
  void zero_grad();
  DType compute_dtype() const { return compute_dtype_; }
  // The backend whose memory holds the parameters.
  backend::Backend& backend() const { return be_; }

 private:
  DType compute_dtype_;
  backend::Backend& be_;
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<Parameter*> ptrs_;
  std::vector<ParamInit> inits_;
};

}  // namespace keel::nn
