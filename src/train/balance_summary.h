// What a mixture-of-experts run's routing balance looked like once the
// learning-rate warm-up was over: the per-step expert load max/mean (mean over
// the MoE layers, as in metrics.jsonl) summarised at the end of `keel train`.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/metrics.h"

namespace keel::train {

class BalanceSummary {
 public:
  // Steps up to warmup_steps (1-based) are not counted; balance_limit is the
  // max/mean a step is compared with (the count of steps above it is reported).
  explicit BalanceSummary(int64_t warmup_steps, double balance_limit = 1.3)
      : warmup_(warmup_steps), limit_(balance_limit) {}

  // Records m's "expert_load_max_mean" when it has one and is past the
  // warm-up, and its "val_expert_load_max_mean" (the routing of evaluation,
  // without training's jitter) when it has one.
  void add(const StepMetrics& m);
  bool empty() const { return loads_.empty(); }
  // {"from_step", "to_step", "steps", "mean", "median", "p90", "max",
  //  "limit", "steps_above_limit"} and, after an evaluation, "val_step" and
  //  "val_load_max_mean" (the last one); null when nothing was recorded.
  nlohmann::json json() const;
  // One line for the end of a run, or "" when nothing was recorded.
  std::string line() const;

 private:
  int64_t warmup_;
  double limit_;
  int64_t first_ = 0, last_ = 0;
  std::optional<std::pair<int64_t, double>> val_;  // (step, max/mean) of the last evaluation
  std::vector<double> loads_;
};

}  // namespace keel::train
