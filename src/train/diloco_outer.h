// DiLoCo's outer optimizer: Nesterov-momentum SGD applied to the global
// parameters ("anchor") with the mean pseudo-gradient of a round (anchor minus
// the replicas' parameters after their local steps) as the gradient.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace keel::train {

struct OuterConfig {
  double lr = 1.0;        // 1 with momentum 0: the replicas' mean, plain averaging
  double momentum = 0.0;  // in [0, 1); the DiLoCo paper uses lr 0.7, momentum 0.9
};

class OuterOptimizer {
 public:
  OuterOptimizer(OuterConfig cfg, int64_t n);
  // v := momentum * v + delta; anchor := anchor - lr * (delta + momentum * v)
  // (PyTorch's SGD with nesterov=True). Element-wise, so any split of the
  // vector gives the same bits.
  void step(std::span<float> anchor, std::span<const float> delta);
  // The momentum buffer (checkpointed with the run).
  std::span<float> momentum() { return v_; }
  const OuterConfig& config() const { return cfg_; }

 private:
  OuterConfig cfg_;
  std::vector<float> v_;
};

}  // namespace keel::train
