#include "train/diloco_outer.h"

#include "core/error.h"

namespace keel::train {

OuterOptimizer::OuterOptimizer(OuterConfig cfg, int64_t n) : cfg_(cfg), v_(size_t(n), 0.f) {
  if (!(cfg_.lr > 0)) fail<ConfigError>("dist.outer_lr: must be > 0, got {}", cfg_.lr);
  if (!(cfg_.momentum >= 0 && cfg_.momentum < 1))
    fail<ConfigError>("dist.outer_momentum: must be in [0, 1), got {}", cfg_.momentum);
}

void OuterOptimizer::step(std::span<float> anchor, std::span<const float> delta) {
  KEEL_ASSERT(anchor.size() == v_.size() && delta.size() == v_.size());
  const float lr = float(cfg_.lr), mu = float(cfg_.momentum);
  for (size_t i = 0; i < v_.size(); ++i) {
    v_[i] = mu * v_[i] + delta[i];
    anchor[i] -= lr * (delta[i] + mu * v_[i]);
  }
}

}  // namespace keel::train
