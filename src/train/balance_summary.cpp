#include "train/balance_summary.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace keel::train {

namespace {

// Nearest-rank quantile of sorted values (q in [0, 1]).
double quantile(const std::vector<double>& sorted, double q) {
  const size_t n = sorted.size();
  const size_t rank = size_t(std::ceil(q * double(n)));
  return sorted[std::clamp<size_t>(rank, 1, n) - 1];
}

}  // namespace

void BalanceSummary::add(const StepMetrics& m) {
  for (const auto& [k, v] : m.model_stats)
    if (k == "val_expert_load_max_mean") val_ = {m.step, v};
  if (m.step <= warmup_ || m.skipped) return;
  for (const auto& [k, v] : m.model_stats) {
    if (k != "expert_load_max_mean") continue;
    if (loads_.empty()) first_ = m.step;
    last_ = m.step;
    loads_.push_back(v);
  }
}

nlohmann::json BalanceSummary::json() const {
  if (loads_.empty()) return nullptr;
  std::vector<double> s = loads_;
  std::sort(s.begin(), s.end());
  double sum = 0;
  for (double v : s) sum += v;
  const auto above = std::count_if(s.begin(), s.end(), [&](double v) { return v > limit_; });
  nlohmann::json j = {{"from_step", first_},
                      {"to_step", last_},
                      {"steps", int64_t(s.size())},
                      {"mean", sum / double(s.size())},
                      {"median", quantile(s, 0.5)},
                      {"p90", quantile(s, 0.9)},
                      {"max", s.back()},
                      {"limit", limit_},
                      {"steps_above_limit", int64_t(above)}};
  if (val_) {
    j["val_step"] = val_->first;
    j["val_load_max_mean"] = val_->second;
  }
  return j;
}

std::string BalanceSummary::line() const {
  if (loads_.empty()) return "";
  const nlohmann::json j = json();
  std::string out = fmt::format(
      "expert load max/mean after the {}-step warm-up (steps {}-{}): mean {:.3f}, median {:.3f}, "
      "p90 {:.3f}, max {:.3f}; {} of {} steps above {}",
      warmup_, first_, last_, j["mean"].get<double>(), j["median"].get<double>(),
      j["p90"].get<double>(), j["max"].get<double>(), j["steps_above_limit"].get<int64_t>(),
      loads_.size(), limit_);
  if (val_)
    out += fmt::format("; validation batches at step {} (routing without jitter): {:.3f}",
                       val_->first, val_->second);
  return out;
}

}  // namespace keel::train
